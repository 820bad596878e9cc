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
    # Flat buffers are the default wherever a move is a real copy; pinning needs CUDA present too.
    assert ResidencyManager("cpu", 1 << 20).flat_buffers is False
    on_card = ResidencyManager("cuda", 1 << 20)
    assert on_card.flat_buffers is True and on_card.pin_host_memory is torch.cuda.is_available()


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


# ---- flat buffers: one host buffer per component, one copy per move ------------------------------
#
# On a CPU-only machine device and host are the same memory, so the manager only copies when told
# to (flat_buffers=True); the copies, views and accounting are the ones a GPU runs, without pinning.


def flat_manager(budget_bytes: int = 10**9) -> ResidencyManager:
    residency = ResidencyManager("cpu", budget_bytes, flat_buffers=True)
    assert residency.pin_host_memory is False
    return residency


def held(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor the module holds, by a stable name (quantization state included)."""
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    for name, sub in module.named_modules():
        state = getattr(getattr(sub, "weight", None), "quant_state", None)
        if state is not None:
            for attr in ("absmax", "code", "offset"):
                if getattr(state, attr, None) is not None:
                    tensors[f"{name}.quant_state.{attr}"] = getattr(state, attr)
            if getattr(state, "state2", None) is not None:  # gone once repacked for the CPU kernel
                tensors[f"{name}.quant_state.state2.absmax"] = state.state2.absmax
                tensors[f"{name}.quant_state.state2.code"] = state.state2.code
    return tensors


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in held(module).items()}


def assert_bitwise_equal(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = held(module)
    assert now.keys() == before.keys()
    for name, tensor in now.items():
        assert tensor.dtype == before[name].dtype and tensor.shape == before[name].shape, name
        assert tensor.stride() == before[name].stride() or not tensor.is_contiguous(), name
        a = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        b = before[name].contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(a, b), name


def storages(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in held(module).values() if t.numel()}


class Mixed(torch.nn.Module):
    """Many small tensors of several dtypes and layouts, as a VAE or CLIP has: a conv, a norm with
    running-stat buffers (one of them int64), an FP8 linear (float8 weight + float32 scale buffers),
    bf16 and fp16 parameters, a transposed (non-contiguous) parameter and two parameters that are
    slices of one fused tensor."""

    def __init__(self):
        from flexy_worker.acceleration import FP8Linear

        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.BatchNorm2d(8)
        self.fp8 = FP8Linear.from_weight(torch.randn(16, 32), torch.randn(16), "row")
        self.half = torch.nn.Linear(5, 7).to(torch.float16)
        self.bf16 = torch.nn.Parameter(torch.randn(3, 33, dtype=torch.bfloat16))
        self.transposed = torch.nn.Parameter(torch.randn(6, 10).t())
        fused = torch.randn(3, 12)
        self.q = torch.nn.Parameter(fused[:, :4])
        self.k = torch.nn.Parameter(fused[:, 4:8])

    def forward(self, image: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(self.conv(image)).sum((2, 3)), self.fp8(x) + (self.q @ self.k.t()).sum()


def test_flat_round_trip_is_bitwise_and_keeps_the_parameter_objects():
    torch.manual_seed(0)
    module = Mixed().eval()
    module.norm.running_mean.uniform_()
    before, objects = snapshot(module), {name: id(t) for name, t in module.named_parameters()}
    inputs = (torch.randn(2, 3, 9, 9), torch.randn(4, 32))
    expected = module(*inputs)

    residency = flat_manager()
    component = residency.attach("e", "vae", module, "sha256:mixed")
    residency.activate("e")  # first placement: per tensor (a no-op on the CPU)
    residency.evict_all()
    assert component.location == "host" and residency.last_move["path"] == "flat"
    host = component.host_buffer.tensor
    assert storages(module) == {host.data_ptr()}  # every tensor, buffers and FP8 included, views it
    assert_bitwise_equal(module, before)

    residency.activate("e")
    assert component.location == "device" and residency.last_move["copies"] == 1 and residency.last_move["early"]
    (device_storage,) = storages(module)
    assert device_storage != host.data_ptr()
    assert_bitwise_equal(module, before)
    assert {name: id(t) for name, t in module.named_parameters()} == objects
    assert type(module.fp8.weight_fp8) is torch.Tensor and module.fp8.weight_fp8.dtype == torch.float8_e4m3fn
    # The fused slices are still two windows on one run of bytes, 4 elements apart.
    assert module.k.data_ptr() - module.q.data_ptr() == 4 * module.q.element_size()
    for got, want in zip(module(*inputs), expected):
        assert torch.equal(got, want)


def test_host_buffer_is_allocated_once_and_reused():
    torch.manual_seed(1)
    module = Mixed()
    before = snapshot(module)
    residency = flat_manager()
    component = residency.attach("e", "vae", module, None)
    residency.activate("e")
    residency.evict_all()
    assert residency.last_move["new_host_buffer"] is True
    buffer_object, pointer = component.host_buffer, component.host_buffer.tensor.data_ptr()
    first_copies = residency.last_move["copies"]
    assert first_copies > 1  # from scattered tensors: one copy per live range
    for _ in range(3):
        residency.activate("e")
        residency.evict_all()
        assert component.host_buffer is buffer_object and component.host_buffer.tensor.data_ptr() == pointer
        assert residency.last_move == {**residency.last_move, "path": "flat", "new_host_buffer": False, "copies": 1}
        assert storages(module) == {pointer}
    assert_bitwise_equal(module, before)


def test_a_tensor_replaced_while_evicted_is_swapped_in_as_it_now_is():
    """The swap-in copy starts before the plan is made, on the guess that nothing changed since the
    eviction; a tensor replaced in between makes the plan differ, and the plan wins."""
    torch.manual_seed(6)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    residency = flat_manager()
    component = residency.attach("e", "m", module, None)
    residency.activate("e")
    residency.evict_all()
    replacement = torch.randn(64)
    module[1].bias.data = replacement.clone()  # its own storage now, outside the host buffer
    before = snapshot(module)
    residency.activate("e")
    assert residency.last_move["early"] is False and residency.last_move["copies"] == 2
    assert_bitwise_equal(module, before)
    assert torch.equal(module[1].bias, replacement)
    residency.evict_all()
    residency.activate("e")
    assert residency.last_move["early"] is True and residency.last_move["copies"] == 1
    assert_bitwise_equal(module, before)
    assert component.nbytes == storage_bytes([module])


def test_flat_accounting_is_the_aligned_sum_of_the_tensors():
    from flexy_worker.residency import ALIGN

    torch.manual_seed(2)
    module = Mixed()
    distinct = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held(module).values()}
    aligned = sum(-(-n // ALIGN) * ALIGN for n in distinct.values())
    residency = flat_manager()
    component = residency.attach("e", "vae", module, None)
    assert component.nbytes == sum(distinct.values())  # before any move: the storages as loaded
    residency.activate("e")
    residency.evict_all()
    assert component.nbytes == aligned and component.host_buffer.nbytes == aligned
    assert residency.device_bytes_used() == 0
    residency.activate("e")
    assert residency.device_bytes_used() == aligned == storage_bytes([module])
    assert residency.report()["engines"] == [{"engine": "e", "location": "device", "bytes": aligned}]
    assert aligned - sum(distinct.values()) < ALIGN * len(distinct)


def test_budget_evicts_through_flat_buffers_and_swaps_back():
    torch.manual_seed(3)

    def make():  # tensors of whole alignment steps: the same size scattered or flat
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 32))

    first, second = make(), make()
    before = (snapshot(first), snapshot(second))
    size = storage_bytes([first])
    residency = flat_manager(budget_bytes=size + size // 2)  # room for one
    residency.attach("a", "m", first, None)
    residency.attach("b", "m", second, None)
    residency.activate("a")
    residency.activate("b")
    assert residency.location_of("a") == "host" and residency.location_of("b") == "device"
    assert residency.activate("a") > 0
    assert residency.location_of("a") == "device" and residency.location_of("b") == "host"
    assert residency.device_bytes_used() == storage_bytes([first]) <= residency.budget_bytes
    assert residency.evictions == 2
    assert_bitwise_equal(first, before[0])
    assert_bitwise_equal(second, before[1])


def test_flat_moves_keep_tied_and_shared_tensors_shared():
    """A component shared by two pipelines (an alias tied by checksum, with a tensor of its own) and a
    module whose weights are tied inside it: after round trips the ties still hold."""
    torch.manual_seed(4)
    primary = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    primary[1].weight = primary[0].weight  # tied inside the module (same Parameter object)
    alias = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    residency = flat_manager()
    residency.attach("a", "encoder", primary, "sha256:same")
    residency.attach("b", "encoder", alias, "sha256:same")
    assert alias[0].weight.data_ptr() == primary[0].weight.data_ptr()
    own = alias[2].weight
    before = (snapshot(primary), snapshot(alias))
    component = residency.components_of("a")["encoder"]
    for engine in ("a", "b", "a"):
        residency.activate(engine)
        residency.evict_all()
        assert component.location == "host"
        assert storages(primary) | storages(alias) == {component.host_buffer.tensor.data_ptr()}
        residency.activate("b" if engine == "a" else "a")
        assert component.location == "device"
        assert primary[1].weight is primary[0].weight
        assert alias[0].weight.data_ptr() == primary[0].weight.data_ptr()
        assert alias[1].weight.data_ptr() == primary[1].weight.data_ptr()
        assert alias[2].weight is own and own.data_ptr() not in {p.data_ptr() for p in primary.parameters()}
        assert len(storages(primary) | storages(alias)) == 1
        # Tied tensors count once: the alias adds only its own layer.
        assert component.nbytes == storage_bytes([primary, alias]) < 2 * storage_bytes([alias])
    assert_bitwise_equal(primary, before[0])
    assert_bitwise_equal(alias, before[1])


def nf4_linear(seed: int = 5):
    """A bitsandbytes NF4 Linear4bit with nested (double-quantized) statistics, quantized on the
    CPU: packed uint8 weight, uint8 absmax, code, offset and a second QuantState (absmax, code)."""
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(seed)
    dense = torch.nn.Linear(128, 64)
    layer = bnb.nn.Linear4bit(128, 64, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4", device="meta")
    weight = bnb.nn.Params4bit(
        dense.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4", blocksize=64, module=layer
    )
    layer.weight = weight._quantize("cpu")
    layer.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    return torch.nn.Sequential(layer).eval()


def test_bitsandbytes_nf4_layer_round_trip():
    import copy

    model = nf4_linear()
    reference = copy.deepcopy(model)
    layer = model[0]
    weight, state = layer.weight, layer.weight.quant_state
    assert state.nested and state.state2 is not None and layer.quant_state is state
    before = snapshot(model)
    assert {"0.quant_state.absmax", "0.quant_state.state2.code", "0.quant_state.offset"} <= before.keys()

    residency = flat_manager()
    component = residency.attach("flux2", "transformer", model, None)
    residency.activate("flux2")
    residency.evict_all()
    host = component.host_buffer.tensor.data_ptr()
    # The packed weight and every quantization-state tensor moved into the one buffer.
    assert storages(model) == {host}
    assert_bitwise_equal(model, before)
    assert component.nbytes >= sum(t.numel() * t.element_size() for t in before.values())

    residency.activate("flux2")
    assert len(storages(model)) == 1 and storages(model) != {host}
    assert_bitwise_equal(model, before)
    assert layer.weight is weight and layer.weight.quant_state is state and layer.quant_state is state
    assert type(layer.weight).__name__ == "Params4bit" and layer.weight.bnb_quantized

    x = torch.randn(3, 128)
    assert torch.equal(model(x), reference(x))
    # bitsandbytes repacks the weight for its CPU kernel on the first eval forward (new tensors, a
    # non-nested float absmax); the next eviction lays out the new set and the layer still matches.
    residency.evict_all()
    assert storages(model) == {component.host_buffer.tensor.data_ptr()}
    residency.activate("flux2")
    assert len(storages(model)) == 1
    assert torch.equal(model(x), reference(x))


def test_engines_round_trip_through_flat_buffers(make_manager, engine_bytes):
    """Real pipelines parked in flat host buffers and brought back draw the same pictures, and the
    T5 and CLIP-L that FLUX.1 and SD3 share stay shared."""
    baseline = {
        "flux1_dev": generate(make_manager(), "flux1_dev").images[0],
        "sd3_medium": generate(make_manager(), "sd3_medium", negative_prompt="fog").images[0],
    }
    # Room for SD3 (the largest) with the alignment padding of the demo models' many tiny tensors,
    # not for SD3 and RealVisXL or FLUX.1's own parts together.
    manager = make_manager(budget_bytes=int(engine_bytes["sd3_medium"] * 1.15))
    residency = manager.residency_manager
    residency.flat_buffers = True
    for engine in ("flux1_dev", "sd3_medium", "realvis_xl", "flux1_dev", "sd3_medium"):
        kwargs = {"negative_prompt": "fog"} if engine == "sd3_medium" else {}
        image = generate(manager, engine, **kwargs).images[0]
        if engine in baseline:
            assert np.array_equal(image, baseline[engine]), engine
        report = manager.residency()
        assert report["device_bytes_used"] <= report["device_budget_bytes"]
    assert residency.evictions >= 3 and report["last_swap_ms"] > 0
    assert residency.last_move["path"] == "flat"

    flux = manager.loaded("flux1_dev").pipeline
    sd3 = manager.loaded("sd3_medium").pipeline
    assert sd3.text_encoder_3 is flux.text_encoder_2
    flux_storages = {p.data_ptr() for p in flux.text_encoder.parameters()}
    own = [name for name, p in sd3.text_encoder.named_parameters() if p.data_ptr() not in flux_storages]
    assert own == ["text_projection.weight"]
    # Each resident component is one device buffer; the accounting is those buffers' bytes.
    device = [c for c in residency.components_of("sd3_medium").values() if c.location == "device"]
    assert device and all(len({t.untyped_storage().data_ptr() for m in c.modules() for t in m.parameters()}) == 1
                          for c in device if c.host_buffer is not None)  # fmt: skip
    resident = {c.key: c for e in residency.engines() for c in residency.components_of(e).values() if c.location == "device"}
    assert report["device_bytes_used"] == sum(c.nbytes for c in resident.values())
