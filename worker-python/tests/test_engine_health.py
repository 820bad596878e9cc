"""Health per engine: snapshot files checked against their manifest, a canary at first load, and an
unavailable engine that fails fast, is retried with backoff and recovers when its files are fixed,
while the other engines keep serving. Real demo snapshots, real pipelines, CPU."""

from __future__ import annotations

import json
import shutil

import diffusers
import pytest
import torch

from flexy_worker.engines import EngineManager, GenerateRequest
from flexy_worker.engines import integrity
from flexy_worker.engines.health import HealthBook
from flexy_worker.engines.integrity import VERIFIED_FILE, SnapshotVerifier, recorded_files
from flexy_worker.errors import EngineUnavailable

FLUX1_WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def tiny(engine: str, job_id: str = "job") -> GenerateRequest:
    return GenerateRequest(job_id=job_id, engine=engine, prompt="a cat", negative_prompt=None, seed=1, steps=1,
                           guidance=3.5, width=64, height=64)  # fmt: skip


@pytest.fixture
def models(demo_models_dir, tmp_path):
    """A private copy of two engines' demo snapshots: tests corrupt files in it."""
    for name in ("flux1_dev", "sd3_medium"):
        shutil.copytree(demo_models_dir / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def fresh(models, catalog, clock):
    manager = EngineManager(catalog, models, "cpu", torch.float32, 1 << 30, "local")
    manager.health = HealthBook((spec.id for spec in catalog), clock=clock)
    return manager


def generate(manager: EngineManager, engine: str):
    return manager.generate(tiny(engine), lambda event: None, lambda: False)


# ---- the book ------------------------------------------------------------------------------------


def test_backoff_doubles_from_five_seconds_to_five_minutes_and_a_load_clears_it(clock):
    book = HealthBook(["a"], clock=clock)
    delays = []
    for _ in range(9):
        delays.append(book.failed("a", "broken").retry_at - clock.now)
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert book.refusal("a") == "a is unavailable: broken (tried again in 300 s)"
    assert book.due() == []
    clock.now += 300
    assert book.due() == ["a"] and book.refusal("a") is None  # due: the next job may try
    book.loaded("a")
    assert (book["a"].state, book["a"].failures, book["a"].retry_at) == ("available", 0, None)
    assert book.failed("a", "again").retry_at - clock.now == 5


# ---- the files -----------------------------------------------------------------------------------


def test_demo_markers_record_every_file(models):
    recorded = recorded_files(models / "flux1_dev")
    assert recorded and FLUX1_WEIGHTS in recorded and "model_index.json" in recorded
    size, sha256 = recorded[FLUX1_WEIGHTS]
    assert size == (models / "flux1_dev" / FLUX1_WEIGHTS).stat().st_size and len(sha256) == 64
    assert SnapshotVerifier().check(models / "flux1_dev") is None


def test_a_corrupt_or_missing_file_names_itself(models):
    snapshot = models / "flux1_dev"
    weights = snapshot / FLUX1_WEIGHTS
    original = weights.read_bytes()
    verifier = SnapshotVerifier()
    assert verifier.check(snapshot) is None

    weights.write_bytes(original[:-10])
    assert verifier.check(snapshot) == f"{weights} is {len(original) - 10} bytes; its manifest records {len(original)}"

    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size, one byte changed
    problem = verifier.check(snapshot)
    assert problem is not None and problem.startswith(f"{weights} fails its sha256 check")

    weights.unlink()
    assert verifier.check(snapshot) == f"{weights} is missing"

    weights.write_bytes(original)
    assert verifier.check(snapshot) is None


def test_digests_are_hashed_again_only_when_a_file_changes_and_large_ones_survive_a_restart(models, monkeypatch):
    snapshot = models / "sd3_medium"
    monkeypatch.setattr(integrity, "PERSIST_FROM_BYTES", 0)  # every file counts as large here
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(path) or real(path))
    assert SnapshotVerifier().check(snapshot) is None
    assert len(hashed) == len(recorded_files(snapshot))
    assert (snapshot / VERIFIED_FILE).exists()

    hashed.clear()
    assert SnapshotVerifier().check(snapshot) is None  # a new verifier (a restarted worker) reads the kept digests
    assert hashed == []

    config = snapshot / "transformer" / "config.json"
    config.write_text(config.read_text())  # same bytes, new mtime
    assert SnapshotVerifier().check(snapshot) is None
    assert hashed == [config]


# ---- the engines -----------------------------------------------------------------------------------


def test_an_engine_whose_files_fail_is_unavailable_while_the_others_serve(fresh, models, clock, monkeypatch):
    weights = models / "flux1_dev" / FLUX1_WEIGHTS
    original = weights.read_bytes()
    weights.write_bytes(original[:-10])

    with pytest.raises(EngineUnavailable, match=f"{weights} is {len(original) - 10} bytes"):
        generate(fresh, "flux1_dev")
    assert generate(fresh, "sd3_medium").images  # one bad engine takes nobody else down
    state = {e["engine"]: (e["state"], e["reason"], e["retry_at"]) for e in fresh.available()}
    assert state["sd3_medium"] == ("available", None, None)
    assert state["flux1_dev"][0] == "unavailable" and str(weights) in state["flux1_dev"][1]
    assert state["flux1_dev"][2] == round((clock.now + 5) * 1000)

    # Before its retry, a job fails at once: no load is attempted.
    loads = []
    monkeypatch.setattr(fresh, "_load", lambda engine: loads.append(engine))
    with pytest.raises(EngineUnavailable, match="flux1_dev is unavailable: .* \\(tried again in 5 s\\)"):
        generate(fresh, "flux1_dev")
    assert loads == []
    monkeypatch.undo()

    # Still broken at the retry: the backoff doubles.
    clock.now += 5
    assert fresh.check_engines() == []
    assert fresh.health["flux1_dev"].retry_at == clock.now + 10

    # Fixed: the next retry finds the files good and the engine serves again, without a restart.
    weights.write_bytes(original)
    assert fresh.check_engines() == []  # not due yet
    clock.now += 10
    assert fresh.check_engines() == ["flux1_dev"]
    assert generate(fresh, "flux1_dev").images
    assert fresh.health["flux1_dev"].failures == 0


def test_files_corrupted_under_a_loaded_engine_are_noticed_and_the_engine_unloaded(fresh, models):
    assert generate(fresh, "flux1_dev").images
    assert fresh.loaded("flux1_dev") is not None
    assert fresh.check_engines() == []  # nothing changed
    weights = models / "flux1_dev" / FLUX1_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert fresh.check_engines() == ["flux1_dev"]
    assert fresh.loaded("flux1_dev") is None
    assert "flux1_dev" not in [e["engine"] for e in fresh.residency()["engines"]]
    with pytest.raises(EngineUnavailable, match=str(weights)):
        generate(fresh, "flux1_dev")


def test_an_engine_that_loads_but_cannot_generate_fails_its_canary_at_load(fresh, monkeypatch):
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x7 and 9x3)")

    monkeypatch.setattr(diffusers.StableDiffusion3Pipeline, "__call__", broken)
    with pytest.raises(EngineUnavailable, match="sd3_medium failed its canary generation: RuntimeError: mat1 and mat2"):
        fresh.load("sd3_medium")
    # One step at the smallest size, through the VAE: the canary, not a job.
    assert [(c["num_inference_steps"], c["width"], c["height"], c["output_type"]) for c in calls] == [(1, 64, 64, "np")]
    assert fresh.loaded("sd3_medium") is None
    assert fresh.health["sd3_medium"].state == "unavailable"
    assert generate(fresh, "flux1_dev").images


def test_an_unreadable_manifest_is_a_problem_not_a_pass(models):
    marker = models / "flux1_dev" / "flexyface-demo.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "files": [{"path": "x"}]}))
    assert SnapshotVerifier().check(models / "flux1_dev") == f"{models / 'flux1_dev' / 'flexyface-demo.json'} is unreadable"
