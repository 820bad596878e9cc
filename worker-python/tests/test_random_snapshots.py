"""Random-weight snapshots in the hub layouts (bench/gpu/snapshots.py) on tiny configs, on the CPU:
the writer's layout, links and marker; the worker serving them as "random"; and a CPU worker refusing
FLUX.2's pre-quantized (bitsandbytes NF4) transformer with engine_unavailable, not a traceback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flexy_worker.engines.base import GenerateRequest
from flexy_worker.engines.manager import EngineManager
from flexy_worker.errors import EngineUnavailable

from test_worker_process import WorkerProc

ROOT = Path(__file__).resolve().parents[2]
WRITER = ROOT / "bench" / "gpu" / "snapshots.py"
ENGINES = ("flux2_dev_4bit", "flux1_dev", "sd3_medium")


@pytest.fixture(scope="module")
def random_models_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("random-models")
    args = [sys.executable, str(WRITER), "--out", str(out), "--tiny", "--device", "cpu"]
    for engine in ENGINES:
        args += ["--engine", engine]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _marker(models_dir: Path, engine: str) -> dict:
    return json.loads((models_dir / engine / "flexyface-demo.json").read_text())


def test_snapshots_have_the_hub_layout_and_a_marker_with_every_digest(random_models_dir):
    for engine in ENGINES:
        root = random_models_dir / engine
        marker = _marker(random_models_dir, engine)
        assert marker["weights"] == "random" and marker["revision"].startswith("random-")
        index = json.loads((root / "model_index.json").read_text())
        for name in marker["components"]:
            assert (root / name / "config.json").exists()
            assert list((root / name).glob("*.safetensors")), f"{engine}/{name} has no weights"
            assert index[name][0] in ("diffusers", "transformers")
        for entry in marker["files"]:
            path = root / entry["path"]
            assert path.stat().st_size == entry["size"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], entry["path"]


def test_flux2_transformer_is_saved_pre_quantized_like_the_hub_repository(random_models_dir):
    root = random_models_dir / "flux2_dev_4bit"
    config = json.loads((root / "transformer" / "config.json").read_text())
    quant = config["quantization_config"]
    assert (quant["quant_method"], quant["bnb_4bit_quant_type"], quant["load_in_4bit"]) == ("bitsandbytes", "nf4", True)
    names = {entry["path"] for entry in _marker(random_models_dir, "flux2_dev_4bit")["files"]}
    header = _safetensors_header(next((root / "transformer").glob("*.safetensors")))
    packed = [k for k in header if k.endswith(".weight.quant_state.bitsandbytes__nf4")]
    assert packed and all(header[k.removesuffix(".quant_state.bitsandbytes__nf4")]["dtype"] == "U8" for k in packed)
    # The remote text encoder is the only one: model_index names the hub's, no files are written.
    assert json.loads((root / "model_index.json").read_text())["text_encoder"][1] == "Mistral3ForConditionalGeneration"
    assert not any(n.startswith("text_encoder/") for n in names)


def test_t5_and_clip_l_are_written_once_and_linked(random_models_dir):
    for flux, sd3 in (("text_encoder_2", "text_encoder_3"), ("text_encoder", "text_encoder")):
        a = next((random_models_dir / "flux1_dev" / flux).glob("*.safetensors"))
        b = next((random_models_dir / "sd3_medium" / sd3).glob("*.safetensors"))
        assert a.stat().st_ino == b.stat().st_ino


def test_cpu_worker_serves_random_snapshots_and_refuses_the_pre_quantized_one(random_models_dir, catalog):
    manager = EngineManager(catalog, random_models_dir, "cpu", "float32", 4 << 30, "remote", remote_token="t")
    assert {e["engine"]: e["weights"] for e in manager.available()} == {e: "random" for e in ENGINES}
    request = GenerateRequest(job_id="r", engine="sd3_medium", prompt="a lighthouse", negative_prompt=None, seed=3,
                              steps=2, guidance=5.0, width=64, height=64)  # fmt: skip
    out = manager.generate(request, lambda event: None, lambda: False)
    assert out.weights == "random" and out.images[0].shape == (64, 64, 3)
    # T5 and CLIP-L of FLUX.1 are SD3's files: one copy in memory.
    sd3_bytes = manager.residency_manager.engine_bytes("sd3_medium")
    manager.load("flux1_dev")
    assert manager.residency_manager.device_bytes_used() < sd3_bytes + manager.residency_manager.engine_bytes("flux1_dev")
    with pytest.raises(EngineUnavailable, match=r"transformer .* pre-quantized with bitsandbytes .* CUDA GPU; this worker runs on cpu"):
        manager.load("flux2_dev_4bit")


def test_the_worker_process_answers_engine_unavailable_for_a_pre_quantized_snapshot(random_models_dir, tmp_path):
    worker = WorkerProc("prequantized", random_models_dir, tmp_path, env={"FLUX2_TEXT_ENCODER": "remote", "HF_TOKEN": "t"})
    try:
        ready = worker.wait_ready()
        assert {e.engine: e.weights for e in ready.engines}["flux2_dev_4bit"] == "random"
        _, result = worker.run_job("pq-1", engine="flux2_dev_4bit", prompt="a corgi", width=64, height=64, steps=2)
        assert result.status == "failed" and result.error is not None
        assert result.error.code == "engine_unavailable"
        assert "pre-quantized with bitsandbytes" in result.error.message and "Traceback" not in result.error.message
        # The worker keeps serving the engines it can load.
        _, ok = worker.run_job("pq-2", engine="sd3_medium", prompt="a corgi", width=64, height=64, steps=2)
        assert ok.status == "succeeded" and ok.weights == "random"
    finally:
        worker.kill()


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))
