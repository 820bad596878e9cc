"""The engine manager on demo snapshots: real diffusers pipelines, tiny random weights, CPU."""

from __future__ import annotations

import http.server
import io
import threading

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

from flexy_worker.catalog import load_catalog
from flexy_worker.engines import GenerateRequest
from flexy_worker.errors import (
    BadInput,
    CudaFatal,
    EngineUnavailable,
    JobCancelled,
    OutOfMemory,
    TextEncoderUnavailable,
    WorkerError,
    classify_exception,
)

ENGINES = ["flux2_dev_4bit", "flux1_dev", "sd3_medium", "realvis_xl"]
WITH_NEGATIVE = {"sd3_medium", "realvis_xl"}


def request_for(engine_id: str, **overrides) -> GenerateRequest:
    engine = engine_id
    fields = dict(
        job_id="job-1",
        engine=engine,
        prompt="a photo of a cat holding a sign",
        negative_prompt="blurry, low quality" if engine in WITH_NEGATIVE else None,
        seed=1234,
        steps=3,
        guidance=3.5,
        width=96,
        height=64,
    )
    fields.update(overrides)
    return GenerateRequest(**fields)


def run(manager, request, should_cancel=lambda: False):
    events = []
    output = manager.generate(request, events.append, should_cancel)
    return output, events


def _is_canary(kwargs: dict, canary_prompt: str) -> bool:
    """The engine manager's one-step canary (its prompt, or FLUX.2's zero embeddings with no prompt)."""
    if kwargs.get("prompt") == canary_prompt:
        return True
    embeds = kwargs.get("prompt_embeds")
    return "prompt" not in kwargs and kwargs.get("num_inference_steps") == 1 and embeds is not None and not bool(embeds.any())


@pytest.fixture
def pipeline_calls(monkeypatch, catalog):
    """Keyword arguments of every real pipeline call for a request (an engine's canary at its first
    load is the manager's own call, not counted): the class's __call__ is wrapped, still runs."""
    from flexy_worker.engines.manager import CANARY_PROMPT

    calls: list[dict] = []
    for spec in catalog:
        pipeline_class = getattr(diffusers, spec.pipeline_class)
        original = pipeline_class.__call__

        def spy(self, *args, _original=original, **kwargs):
            if not _is_canary(kwargs, CANARY_PROMPT):
                calls.append(kwargs)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pipeline_class, "__call__", spy)
    return calls


# ---- parameters reach the pipeline ----------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_pipeline_receives_exactly_the_requested_parameters(manager, pipeline_calls, engine):
    request = request_for(engine, num_images=2, guidance=2.5, seed=77)
    output, events = run(manager, request)

    assert len(pipeline_calls) == 1
    call = pipeline_calls[0]
    assert type(manager.loaded(engine).pipeline).__name__ == manager.catalog[engine].pipeline_class
    assert call["prompt"] == request.prompt
    assert (call["width"], call["height"]) == (96, 64)
    assert call["num_inference_steps"] == 3
    assert call["guidance_scale"] == 2.5
    assert call["num_images_per_prompt"] == 2
    assert call["generator"].initial_seed() == 77
    if engine in WITH_NEGATIVE:
        assert call["negative_prompt"] == "blurry, low quality"
    else:
        assert "negative_prompt" not in call

    assert len(output.images) == 2
    for image in output.images:
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    assert not np.array_equal(output.images[0], output.images[1])
    assert [e.step for e in events] == [1, 2, 3]
    assert all(e.total_steps == 3 for e in events)
    assert output.weights == "demo"
    assert output.revision == next(a["revision"] for a in manager.available() if a["engine"] == engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_same_request_gives_identical_pixels_and_seed_changes_them(manager, engine):
    first, _ = run(manager, request_for(engine, seed=5))
    again, _ = run(manager, request_for(engine, seed=5))
    other, _ = run(manager, request_for(engine, seed=6))
    assert np.array_equal(first.images[0], again.images[0])
    assert not np.array_equal(first.images[0], other.images[0])


def test_negative_prompt_changes_the_image(manager):
    with_negative, _ = run(manager, request_for("sd3_medium", negative_prompt="blurry"))
    without, _ = run(manager, request_for("sd3_medium", negative_prompt=None))
    assert not np.array_equal(with_negative.images[0], without.images[0])


def test_sdxl_accepts_multiples_of_eight(manager):
    output, _ = run(manager, request_for("realvis_xl", width=72, height=88, steps=2))
    assert output.images[0].shape == (88, 72, 3)


def test_steps_arrive_in_order_with_previews_every_n(manager):
    output, events = run(manager, request_for("flux1_dev", steps=6, preview_every=2, width=128, height=64))
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    elapsed = [e.elapsed_ms for e in events]
    assert elapsed == sorted(elapsed)
    for event in events:
        if event.step % 2:
            assert event.preview is None
        else:
            preview = event.preview
            assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[2] == 3
            assert max(preview.shape[:2]) <= 64
            assert preview.shape[:2] == (4, 8)  # the 16-px token grid keeps the aspect ratio
    assert events[1].preview.std() > 0


@pytest.mark.parametrize("engine", ["sd3_medium", "realvis_xl", "flux2_dev_4bit"])
def test_previews_for_each_latent_layout(manager, engine):
    _, events = run(manager, request_for(engine, steps=2, preview_every=1, width=512, height=256))
    for event in events:
        height, width, channels = event.preview.shape
        assert channels == 3 and max(height, width) <= 64 and width == 2 * height


def test_timings_split_the_run(manager):
    output, _ = run(manager, request_for("flux1_dev"))
    timings = output.timings
    assert set(timings) == {"load_ms", "text_encode_ms", "denoise_ms", "decode_ms", "total_ms"}
    assert all(value >= 0 for value in timings.values())
    assert timings["text_encode_ms"] > 0 and timings["denoise_ms"] > 0 and timings["decode_ms"] > 0
    parts = timings["load_ms"] + timings["text_encode_ms"] + timings["denoise_ms"] + timings["decode_ms"]
    assert parts <= timings["total_ms"] + 1


# ---- cancel ---------------------------------------------------------------------------------------


def test_cancel_mid_run_stops_within_one_step(manager):
    run(manager, request_for("flux1_dev", steps=1))  # loaded, so only denoising is counted
    transformer = manager.loaded("flux1_dev").pipeline.transformer
    forward_calls = []
    handle = transformer.register_forward_hook(lambda *args: forward_calls.append(1))
    events = []
    try:
        with pytest.raises(JobCancelled):
            manager.generate(request_for("flux1_dev", steps=20), events.append, lambda: len(events) >= 2)
    finally:
        handle.remove()
    assert [e.step for e in events] == [1, 2]
    assert len(forward_calls) == 2
    # The pipeline is left usable: the next request runs to the end.
    output, events = run(manager, request_for("flux1_dev", steps=2))
    assert [e.step for e in events] == [1, 2] and output.images


def test_cancel_before_start_runs_nothing(manager, pipeline_calls):
    with pytest.raises(JobCancelled):
        manager.generate(request_for("sd3_medium"), lambda event: None, lambda: True)
    assert pipeline_calls == []


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "overrides", "field"),
    [
        ("flux1_dev", {"engine": "dalle"}, "engine"),
        ("flux1_dev", {"prompt": "   "}, "prompt"),
        ("realvis_xl", {"prompt": "x" * 1001}, "prompt"),
        ("flux1_dev", {"width": 100}, "width"),
        ("flux1_dev", {"height": 4096}, "height"),
        ("realvis_xl", {"width": 60}, "width"),
        ("flux1_dev", {"width": 2048, "height": 2048}, "width"),
        ("flux1_dev", {"steps": 0}, "steps"),
        ("sd3_medium", {"steps": 101}, "steps"),
        ("flux1_dev", {"steps": 2.5}, "steps"),
        ("flux1_dev", {"guidance": 10.5}, "guidance"),
        ("flux1_dev", {"guidance": float("nan")}, "guidance"),
        ("sd3_medium", {"guidance": -1}, "guidance"),
        ("flux1_dev", {"num_images": 5}, "num_images"),
        ("flux1_dev", {"num_images": 0}, "num_images"),
        ("flux1_dev", {"negative_prompt": "blurry"}, "negative_prompt"),
        ("flux2_dev_4bit", {"negative_prompt": "blurry"}, "negative_prompt"),
        ("flux1_dev", {"seed": -1}, "seed"),
        # One past the catalog's seed range (generated from libs/contracts), not a bound restated here.
        ("flux1_dev", {"seed": int(load_catalog().seed.max) + 1}, "seed"),
        ("flux1_dev", {"prompt": "a cat \ud800 on a mat"}, "prompt"),
        ("flux1_dev", {"prompt": "a cat\x00"}, "prompt"),
        ("sd3_medium", {"negative_prompt": "blurry \udc00"}, "negative_prompt"),
        ("flux1_dev", {"references": [PIL.Image.new("RGB", (64, 64))]}, "references"),
        ("flux2_dev_4bit", {"references": [PIL.Image.new("RGB", (64, 64))] * 11}, "references"),
        ("flux2_dev_4bit", {"references": [PIL.Image.new("RGB", (48, 64))]}, "references"),
        ("flux2_dev_4bit", {"references": [PIL.Image.new("RGB", (64, 640))]}, "references"),
        ("flux2_dev_4bit", {"references": ["not an image"]}, "references"),
        ("flux1_dev", {"preview_every": -1}, "preview_every"),
    ],
)
def test_bad_input_names_the_field(manager, pipeline_calls, engine, overrides, field):
    with pytest.raises(BadInput) as caught:
        manager.generate(request_for(engine, **overrides), lambda event: None, lambda: False)
    assert caught.value.field == field
    assert caught.value.code == "bad_input"
    assert pipeline_calls == []


def test_missing_snapshot_is_engine_unavailable(tmp_path, catalog):
    from flexy_worker.engines import EngineManager

    empty = EngineManager(catalog, tmp_path, "cpu", torch.float32, 1 << 30, "local")
    assert empty.available() == []
    with pytest.raises(EngineUnavailable):
        empty.generate(request_for("flux1_dev"), lambda event: None, lambda: False)


# ---- FLUX.2 references and text encoder -----------------------------------------------------------


def test_flux2_reference_images_reach_the_pipeline(manager, pipeline_calls):
    references = [PIL.Image.new("RGB", (112, 64), (200, 30, 30)), PIL.Image.new("RGB", (64, 64), (20, 20, 220))]
    with_refs, _ = run(manager, request_for("flux2_dev_4bit", references=references))
    without, _ = run(manager, request_for("flux2_dev_4bit"))

    images = pipeline_calls[0]["image"]
    assert [image.size for image in images] == [(112, 64), (64, 64)]
    assert "image" not in pipeline_calls[1]
    assert with_refs.images[0].shape == (64, 96, 3)
    # The references condition the transformer: the same seed gives another picture.
    assert not np.array_equal(with_refs.images[0], without.images[0])


def test_flux2_takes_up_to_ten_references(manager, pipeline_calls):
    references = [PIL.Image.new("RGB", (64, 64), (i * 20, 0, 0)) for i in range(10)]
    output, _ = run(manager, request_for("flux2_dev_4bit", references=references, steps=1))
    assert len(pipeline_calls[0]["image"]) == 10 and output.images


class _EmbedsServer:
    """A loopback stand-in for the remote FLUX.2 text encoder: answers with torch.save'd embeddings."""

    def __init__(self, tail: tuple[int, int]):
        self.tail = tail
        self.requests: list[bytes] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                server.requests.append(self.rfile.read(int(self.headers["Content-Length"])))
                embeds = torch.randn(1, *server.tail, generator=torch.Generator().manual_seed(0))
                buffer = io.BytesIO()
                torch.save(embeds.to(torch.bfloat16), buffer)
                body = buffer.getvalue()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/predict"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _demo_flux2_tail(demo_models_dir) -> tuple[int, int]:
    import json

    config = json.loads((demo_models_dir / "flux2_dev_4bit" / "transformer" / "config.json").read_text())
    return 512, config["joint_attention_dim"]


def test_flux2_remote_text_encoder_supplies_prompt_embeds(make_manager, demo_models_dir, pipeline_calls):
    tail = _demo_flux2_tail(demo_models_dir)
    server = _EmbedsServer(tail)
    try:
        remote = make_manager(text_encoder_mode="remote", remote_url=server.url, remote_token="hf_test")
        output, _ = run(remote, request_for("flux2_dev_4bit"))
    finally:
        server.close()
    assert remote.loaded("flux2_dev_4bit").pipeline.text_encoder is None  # never loaded
    assert b"a photo of a cat holding a sign" in server.requests[0]
    call = pipeline_calls[0]
    assert "prompt" not in call
    assert tuple(call["prompt_embeds"].shape) == (1, *tail)
    assert output.images[0].shape == (64, 96, 3)
    assert output.timings["text_encode_ms"] > 0


def test_flux2_remote_mode_fails_cleanly_without_the_endpoint(make_manager):
    remote = make_manager(text_encoder_mode="remote", remote_url="http://127.0.0.1:9/predict", remote_token="hf_test")
    with pytest.raises(TextEncoderUnavailable):
        remote.generate(request_for("flux2_dev_4bit"), lambda event: None, lambda: False)


def test_flux2_auto_mode_falls_back_to_the_local_encoder(make_manager, manager):
    auto = make_manager(text_encoder_mode="auto", remote_url="http://127.0.0.1:9/predict", remote_token="hf_test")
    output, _ = run(auto, request_for("flux2_dev_4bit"))
    local, _ = run(manager, request_for("flux2_dev_4bit"))
    assert auto.loaded("flux2_dev_4bit").text_encoder_source == "local"
    assert np.array_equal(output.images[0], local.images[0])


def test_flux2_auto_mode_without_token_uses_the_local_encoder(make_manager):
    auto = make_manager(text_encoder_mode="auto", remote_token="")
    auto.load("flux2_dev_4bit")
    assert auto.loaded("flux2_dev_4bit").pipeline.text_encoder is not None


# ---- failures -------------------------------------------------------------------------------------


def test_classify_exception():
    assert isinstance(classify_exception(torch.cuda.OutOfMemoryError("CUDA out of memory")), OutOfMemory)
    assert isinstance(classify_exception(RuntimeError("CUDA error: an illegal memory access was encountered")), CudaFatal)
    assert isinstance(classify_exception(RuntimeError("CUDA error: unspecified launch failure")), CudaFatal)
    assert isinstance(classify_exception(RuntimeError("CUDA error: device-side assert triggered")), CudaFatal)
    assert isinstance(classify_exception(RuntimeError("uncorrectable ECC error encountered")), CudaFatal)
    internal = classify_exception(ValueError("boom"))
    assert type(internal) is WorkerError and internal.code == "internal" and "boom" in internal.message
    bad = BadInput("no", field="width")
    assert classify_exception(bad) is bad


def test_injected_oom_is_classified_freed_and_the_next_request_served(make_manager):
    fresh = make_manager()
    baseline, _ = run(fresh, request_for("flux1_dev"))
    run(fresh, request_for("sd3_medium"))
    fresh.inject_oom_on_next_denoise()
    with pytest.raises(OutOfMemory) as caught:
        fresh.generate(request_for("flux1_dev"), lambda event: None, lambda: False)
    assert caught.value.code == "oom"
    assert caught.value.__traceback__ is not None and caught.value.__context__ is None
    # Other engines were parked in host memory to give the retry the device.
    locations = {e["engine"]: e["location"] for e in fresh.residency()["engines"]}
    assert locations == {"flux1_dev": "device", "sd3_medium": "host"}
    again, events = run(fresh, request_for("flux1_dev"))
    assert np.array_equal(again.images[0], baseline.images[0])
    assert [e.step for e in events] == [1, 2, 3]


def test_hub_snapshot_reports_the_manifest_revision_and_reuses_its_digests(demo_models_dir, catalog, tmp_path):
    import hashlib
    import json
    import shutil

    from flexy_worker.engines import EngineManager
    from flexy_worker.residency import content_key

    snapshot = tmp_path / "realvis_xl"
    shutil.copytree(demo_models_dir / "realvis_xl", snapshot)
    (snapshot / "flexyface-demo.json").unlink()
    files = [p for p in sorted(snapshot.rglob("*")) if p.is_file()]
    manifest_files = [
        {"path": p.relative_to(snapshot).as_posix(), "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in files
    ]
    revision = "0123456789abcdef0123456789abcdef01234567"
    (snapshot / "flexyface-manifest.json").write_text(json.dumps(
        {"weights": "hub", "engine": "realvis_xl", "repo": "SG161222/RealVisXL_V5.0", "revision": revision,
         "files": manifest_files, "pulledAt": "2026-01-01T00:00:00Z"}
    ))  # fmt: skip

    hub = EngineManager(catalog, tmp_path, "cpu", torch.float32, 1 << 30, "local")
    assert hub.available() == [{"engine": "realvis_xl", "weights": "hub", "revision": revision, "state": "available", "reason": None, "retry_at": None}]
    output, _ = run(hub, request_for("realvis_xl", steps=2))
    assert (output.weights, output.revision) == ("hub", revision)

    # The manifest's digests stand in for hashing: a recorded digest is taken as the file's.
    unet = snapshot / "unet"
    weights = unet / "diffusion_pytorch_model.fp16.safetensors"
    recorded = {weights: (weights.stat().st_size, "f" * 64)}
    assert content_key(unet, "fp16", recorded) != content_key(unet, "fp16")
    # A record whose size no longer matches the file is stale and ignored.
    stale = {weights: (weights.stat().st_size + 1, "f" * 64)}
    assert content_key(unet, "fp16", stale) == content_key(unet, "fp16")
