"""Residency: shared components held once, LRU eviction to host memory under a byte budget, and
swaps back, observed through real pipelines on the demo snapshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexy_worker.engines import GenerateRequest
from flexy_worker.residency import ResidencyManager, storage_bytes


def request_for(engine: str, **overrides) -> GenerateRequest:
    fields = dict(
        job_id="job-r", engine=engine, prompt="a lighthouse at dusk", negative_prompt=None,
        seed=11, steps=2, guidance=3.0, width=64, height=64,
    )  # fmt: skip
    fields.update(overrides)
    return GenerateRequest(**fields)


def generate(manager, engine: str, **overrides):
    return manager.generate(request_for(engine, **overrides), lambda event: None, lambda: False)


def locations(manager) -> dict[str, str]:
    return {entry["engine"]: entry["location"] for entry in manager.residency()["engines"]}


def all_storages(*pipelines) -> int:
    modules = [c for p in pipelines for c in p.components.values() if isinstance(c, torch.nn.Module)]
    return storage_bytes(modules)


@pytest.fixture(scope="module")
def engine_bytes(make_manager):
    """Each engine's resident size, measured alone."""
    sizes = {}
    for engine in ("flux1_dev", "sd3_medium", "realvis_xl", "flux2_dev_4bit"):
        alone = make_manager()
        alone.load(engine)
        sizes[engine] = alone.residency()["device_bytes_used"]
    return sizes


def test_flux1_and_sd3_hold_one_copy_of_t5_and_clip_l(make_manager):
    manager = make_manager()
    generate(manager, "flux1_dev")
    generate(manager, "sd3_medium")
    flux = manager.loaded("flux1_dev").pipeline
    sd3 = manager.loaded("sd3_medium").pipeline

    # T5: the same class in both pipelines, so SD3 received FLUX.1's module object.
    assert sd3.text_encoder_3 is flux.text_encoder_2
    # CLIP-L: CLIPTextModel in FLUX.1, CLIPTextModelWithProjection in SD3; same files, so SD3's
    # module points at FLUX.1's tensors and only its projection is its own.
    assert type(flux.text_encoder) is not type(sd3.text_encoder)
    flux_storages = {p.data_ptr() for p in flux.text_encoder.parameters()}
    own = [name for name, p in sd3.text_encoder.named_parameters() if p.data_ptr() not in flux_storages]
    assert own == ["text_projection.weight"]
    # CLIP-G only has the same shapes; it must stay separate.
    clip_g_storages = {p.data_ptr() for p in sd3.text_encoder_2.parameters()}
    assert not clip_g_storages & flux_storages

    report = manager.residency()
    per_engine = {entry["engine"]: entry["bytes"] for entry in report["engines"]}
    assert report["device_bytes_used"] == all_storages(flux, sd3)
    assert report["device_bytes_used"] < per_engine["flux1_dev"] + per_engine["sd3_medium"]


def test_sharing_does_not_change_the_pictures(make_manager):
    shared = make_manager()
    flux_shared = generate(shared, "flux1_dev").images[0]
    sd3_shared = generate(shared, "sd3_medium", negative_prompt="fog").images[0]
    flux_again = generate(shared, "flux1_dev").images[0]
    assert np.array_equal(generate(make_manager(), "flux1_dev").images[0], flux_shared)
    assert np.array_equal(generate(make_manager(), "sd3_medium", negative_prompt="fog").images[0], sd3_shared)
    assert np.array_equal(flux_again, flux_shared)


def test_sharing_is_by_content_not_by_name(make_manager, demo_models_dir):
    """The same files under another component name are still recognised."""
    manager = make_manager()
    manager.load("sd3_medium")
    keys = {
        name: component.key for name, component in manager.residency_manager.components_of("sd3_medium").items()
    }
    manager.load("flux1_dev")
    flux_keys = {
        name: component.key for name, component in manager.residency_manager.components_of("flux1_dev").items()
    }
    assert flux_keys["text_encoder_2"] == keys["text_encoder_3"]
    assert flux_keys["text_encoder"] == keys["text_encoder"]
    assert flux_keys["transformer"] != keys["transformer"] and flux_keys["vae"] != keys["vae"]


def test_lru_eviction_to_host_and_swap_back(make_manager, engine_bytes):
    # Room for any two of the three engines, never all three.
    trio = ("flux1_dev", "realvis_xl", "flux2_dev_4bit")
    budget = sum(sorted(engine_bytes[e] for e in trio)[1:]) + 1024
    manager = make_manager(budget_bytes=budget)

    generate(manager, "flux1_dev")
    generate(manager, "realvis_xl")
    assert locations(manager) == {"flux1_dev": "device", "realvis_xl": "device"}
    generate(manager, "flux1_dev")  # flux1 is now the most recently used
    flux_pipeline = manager.loaded("flux1_dev").pipeline

    generate(manager, "flux2_dev_4bit")
    assert locations(manager) == {"flux1_dev": "device", "realvis_xl": "host", "flux2_dev_4bit": "device"}
    report = manager.residency()
    assert report["device_bytes_used"] <= report["device_budget_bytes"] == budget
    assert report["last_load_ms"] > 0 and report["last_swap_ms"] is None

    load_ms_before = report["last_load_ms"]
    output = generate(manager, "realvis_xl")
    report = manager.residency()
    assert locations(manager)["realvis_xl"] == "device"
    assert locations(manager)["flux1_dev"] == "host"  # least recently used of the other two
    assert report["last_swap_ms"] > 0
    assert report["last_load_ms"] == load_ms_before  # swapped back, not loaded again
    assert output.timings["load_ms"] > 0
    assert manager.loaded("flux1_dev").pipeline is flux_pipeline  # parked, not dropped
    assert report["device_bytes_used"] <= budget
    assert manager.residency_manager.evictions >= 2


def test_shared_component_stays_on_device_for_the_engine_using_it(make_manager, engine_bytes):
    # Room for SD3 and the shared encoders, not for FLUX.1's own transformer and VAE as well.
    manager = make_manager(budget_bytes=engine_bytes["sd3_medium"] + 1024)
    generate(manager, "flux1_dev")
    generate(manager, "sd3_medium")
    components = manager.residency_manager.components_of("flux1_dev")
    assert components["transformer"].location == "host" and components["vae"].location == "host"
    assert components["text_encoder_2"].location == "device"  # SD3's T5 too
    assert locations(manager) == {"flux1_dev": "host", "sd3_medium": "device"}
    assert manager.residency()["device_bytes_used"] <= engine_bytes["sd3_medium"] + 1024


def test_unload_keeps_what_another_engine_still_uses(make_manager):
    manager = make_manager()
    generate(manager, "flux1_dev")
    baseline = generate(manager, "sd3_medium").images[0]
    manager.unload("flux1_dev")
    assert manager.loaded("flux1_dev") is None
    assert [e["engine"] for e in manager.residency()["engines"]] == ["sd3_medium"]
    sd3 = manager.loaded("sd3_medium").pipeline
    assert manager.residency()["device_bytes_used"] == all_storages(sd3)
    assert np.array_equal(generate(manager, "sd3_medium").images[0], baseline)
    manager.unload(None)
    assert manager.residency()["engines"] == [] and manager.residency()["device_bytes_used"] == 0


def test_report_matches_the_wire_protocol(make_manager):
    manager = make_manager(budget_bytes=123_456_789)
    assert manager.residency() == {
        "engines": [],
        "device_bytes_used": 0,
        "device_budget_bytes": 123_456_789,
        "last_load_ms": None,
        "last_swap_ms": None,
    }
    generate(manager, "realvis_xl")
    (entry,) = manager.residency()["engines"]
    assert entry["engine"] == "realvis_xl" and entry["location"] == "device" and entry["bytes"] > 0


def test_host_memory_is_pinned_only_with_cuda():
    assert ResidencyManager("cpu", 1 << 20).pin_host_memory is False


def test_tie_and_move_keep_one_storage_per_tensor():
    """A module tied to another follows it between host and device without a second copy."""
    residency = ResidencyManager("cpu", 10**9)
    torch.manual_seed(0)
    primary = torch.nn.Sequential(torch.nn.Linear(4, 4))
    alias = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    residency.attach("a", "encoder", primary, "sha256:same")
    residency.attach("b", "encoder", alias, "sha256:same")
    assert alias[0].weight.data_ptr() == primary[0].weight.data_ptr()
    assert alias[1].weight.data_ptr() != primary[0].weight.data_ptr()
    component = residency.components_of("a")["encoder"]
    assert component.nbytes == storage_bytes([primary, alias]) == (16 + 4 + 8 + 2) * 4
    residency.activate("a")
    residency.evict_all()
    assert component.location == "host"
    residency.activate("b")
    assert component.location == "device"
    assert alias[0].weight.data_ptr() == primary[0].weight.data_ptr()


def test_same_weights_with_another_config_are_not_handed_over_as_one_module():
    residency = ResidencyManager("cpu", 10**9)
    encoder = torch.nn.Linear(4, 4)
    residency.attach("a", "text_encoder", encoder, "sha256:weights", config="config-1")
    assert residency.shareable("sha256:weights", torch.nn.Linear, "config-1") is encoder
    assert residency.shareable("sha256:weights", torch.nn.Linear, "config-2") is None
    assert residency.shareable("sha256:weights", torch.nn.Conv1d, "config-1") is None
    assert residency.shareable("sha256:other", torch.nn.Linear, "config-1") is None
