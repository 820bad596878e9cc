"""The fast paths' configuration and numerics, on tiny shapes on the CPU (the FP8 arithmetic is the
same on the CPU, dequantized, as what torch._scaled_mm does on the GPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexy_worker import acceleration as acc
from tiny_models import tiny_flux2_transformer


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---- configuration ------------------------------------------------------------------------------


def test_parse_options_and_table():
    path = acc.parse_options("fp8+compile+sdpa=cudnn+cache=0.1")
    assert path == acc.FastPath(compile=True, fp8="row", sdpa="cudnn", step_cache=0.1)
    assert path.describe() == "fp8+compile+sdpa=cudnn+cache=0.1"
    assert acc.parse_options("fp8=tensor").fp8 == "tensor"
    assert acc.parse_options("compile=max-autotune-no-cudagraphs").compile_mode == "max-autotune-no-cudagraphs"
    assert not acc.parse_options("off").enabled()

    table = acc.parse_fast_path("flux2_dev_4bit:fp8+compile, flux1_dev:compile ,*:sdpa=flash")
    assert table["flux2_dev_4bit"].fp8 == "row" and table["flux2_dev_4bit"].compile
    assert table["flux1_dev"] == acc.FastPath(compile=True)
    value = "flux1_dev:compile,*:sdpa=flash"
    assert acc.fast_path_for("flux1_dev", value).compile
    assert acc.fast_path_for("sd3_medium", value).sdpa == "flash"
    assert not acc.fast_path_for("sd3_medium", None).enabled()


def test_parse_gemm_and_attention_options():
    path = acc.parse_options("fp8+accum=fast+bias=fused+attn=int8+compile+sdpa=cudnn")
    assert path == acc.FastPath(compile=True, fp8="row", sdpa="cudnn", fast_accum=True, bias_fused=True, attention="int8")
    assert path.describe() == "fp8+accum=fast+bias=fused+attn=int8+compile+sdpa=cudnn"
    assert acc.parse_options(path.describe()) == path  # describe() round-trips
    assert acc.parse_options("attn=fp8qk").attention == "fp8qk" and acc.parse_options("attn=fp8qk").enabled()
    assert acc.parse_options("attn=cudnn") == acc.FastPath(sdpa="cudnn")  # attn= still names SDPA backends
    assert acc.parse_options("accum=exact+bias=add") == acc.FastPath(fast_accum=False)
    assert acc.fast_path_for("flux2_dev_4bit", "flux2_dev_4bit:fp8+attn=fp8").attention == "fp8"


@pytest.mark.parametrize("bad", ["sdpa=fp8", "attn=fp4", "accum=slow", "bias=late"])
def test_parse_rejects_bad_gemm_and_attention_options(bad):
    with pytest.raises(ValueError):
        acc.parse_options(bad)


def test_fast_preset_takes_fast_accumulation_on_fp8_cards_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(acc, "fp8_supported", lambda device: True)
    monkeypatch.setattr(acc, "_is_cuda", lambda device: True)
    preset = acc.parse_options("fast").resolve("cuda")
    assert preset == acc.FastPath(compile=True, fp8="row", fast_accum=True, sdpa="cudnn")
    assert acc.parse_options("fast+accum=exact").resolve("cuda").fast_accum is False
    monkeypatch.setattr(acc, "fp8_supported", lambda device: False)
    assert acc.parse_options("fast").resolve("cuda") == acc.FastPath(compile=True, sdpa="cudnn")


def test_resolve_drops_gemm_and_attention_options_without_fp8():
    # no FP8 tensor cores on the CPU: no FP8 GEMMs, so no options of theirs, and no 8-bit attention
    path = acc.parse_options("fp8+accum=fast+bias=fused+attn=fp8+compile").resolve("cpu")
    assert path == acc.FastPath(compile=True)
    assert not acc.fp8_attention_available("cpu")
    assert not acc.scaled_mm_bias_supported("cpu")


@pytest.mark.parametrize("bad", ["fp8=int4", "warp", "sdpa=sage", "cache=2"])
def test_parse_rejects_unknown(bad):
    with pytest.raises(ValueError):
        acc.parse_options(bad)
    with pytest.raises(ValueError):
        acc.parse_fast_path("no-colon")


def test_resolve_on_cpu_keeps_only_what_applies():
    assert acc.parse_options("fast").resolve("cpu") == acc.FastPath(compile=True)
    assert acc.parse_options("fp8+sdpa=cudnn+cache=0.05").resolve("cpu") == acc.FastPath(step_cache=0.05)
    assert not acc.fp8_supported("cpu")


# ---- FP8 numerics -------------------------------------------------------------------------------


def test_quantize_fp8_row_roundtrip():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    w[::7] *= 1e-3  # rows of very different magnitude: row-wise scales keep the small ones
    q, scale = acc.quantize_fp8(w, "row")
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1) and scale.dtype == torch.float32
    back = q.float() * scale
    assert rel_err(back, w) < 0.04
    small = slice(0, None, 7)
    assert rel_err(back[small], w[small]) < 0.04
    q_t, scale_t = acc.quantize_fp8(w, "tensor")
    assert scale_t.shape == ()
    # one scale for the whole tensor flushes the small rows' low bits: much worse there
    assert rel_err(q_t.float()[small] * scale_t, w[small]) > rel_err(back[small], w[small])
    assert float(q.float().abs().max()) <= acc.FP8_MAX


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_fp8_linear_matches_dense(granularity):
    torch.manual_seed(1)
    x = torch.randn(3, 10, 64, dtype=torch.bfloat16)
    w = torch.randn(48, 64) / 8
    b = torch.randn(48)
    layer = acc.FP8Linear.from_weight(w, b, granularity)
    out = layer(x)
    ref = x.float() @ w.t() + b
    assert out.shape == (3, 10, 48) and out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 0.06


def test_fp8_linear_per_token_scales_keep_small_tokens():
    torch.manual_seed(2)
    x = torch.randn(8, 64)
    x[0] *= 1e-4  # one quiet token among loud ones
    w = torch.randn(32, 64) / 8
    out = acc.fp8_linear(x, *acc.quantize_fp8(w, "row"), None, "row", torch.float32)
    assert rel_err(out[0], x[0] @ w.t()) < 0.06


def test_fp8_linear_gemm_options():
    torch.manual_seed(5)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.randn(32, 64) / 8
    b = torch.randn(32).to(torch.bfloat16)
    layer = acc.FP8Linear.from_weight(w, b)
    plain = layer(x)
    assert acc.set_fp8_gemm_options(nn.Sequential(layer, nn.ReLU()), fast_accum=True, bias_fused=True) == 1
    assert layer.fast_accum and layer.bias_fused and "accum=fast, bias=fused" in repr(layer)
    fused = layer(x)  # the bias added in fp32 before rounding, as the GEMM epilogue does
    assert fused.dtype == torch.bfloat16 and rel_err(fused, plain) < 0.01
    ref = x.float() @ w.t() + b.float()
    assert rel_err(fused, ref) < 0.06
    assert not acc._bias_fusable(b.float(), torch.bfloat16)  # torch wants the bias in the output dtype
    assert not acc._bias_fusable(b, torch.float32)  # and no bias with an fp32 output
    assert acc._bias_fusable(b, torch.bfloat16)


def _flux2_inputs(seed: int = 4, timestep: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    tokens, text = 16, 8
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), torch.zeros(1), indexing="ij"), -1).reshape(-1, 4)
    return {
        "hidden_states": torch.randn(1, tokens, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, text, 32, generator=g),
        "timestep": torch.tensor([timestep]),
        "guidance": torch.tensor([4.0]),
        "img_ids": img_ids,
        "txt_ids": torch.zeros(text, 4),
        "return_dict": False,
    }


def test_convert_to_fp8_tiny_flux2_blocks_only():
    model = tiny_flux2_transformer()
    inputs = _flux2_inputs()
    with torch.no_grad():
        ref = model(**inputs)[0]
    dtype_before = model.dtype
    blocks = acc.repeated_blocks(model)
    assert len(blocks) == 3
    eligible = sum(1 for b in blocks for m in b.modules() if type(m) is nn.Linear)
    report = acc.convert_to_fp8(model, "row")
    assert report["fp8_layers"] == eligible > 0
    assert report["fp8_bytes_after"] < report["fp8_bytes_before"] / 3  # fp32 -> fp8 plus row scales
    assert model.dtype == dtype_before  # the pipeline reads the model dtype for its latents
    assert not any(type(m) is nn.Linear for b in blocks for m in b.modules())
    assert type(model.x_embedder) is nn.Linear and type(model.proj_out) is nn.Linear  # outside the blocks
    with torch.no_grad():
        out = model(**inputs)[0]
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 0.05


def test_compile_repeated_blocks_marks_each_block():
    model = tiny_flux2_transformer()
    assert acc.repeated_block_classes(model) == ("Flux2TransformerBlock", "Flux2SingleTransformerBlock")
    assert acc.compile_repeated_blocks(model) == 3
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in acc.repeated_blocks(model))


def test_fallback_block_lists():
    from diffusers import SD3Transformer2DModel

    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                pooled_projection_dim=16, out_channels=4, pos_embed_max_size=8)  # fmt: skip
    assert len(acc.repeated_blocks(sd3)) == 2


@pytest.mark.parametrize("compiled", [False, True])
def test_step_cache_skips_and_resets(compiled):
    model = tiny_flux2_transformer()
    full = tiny_flux2_transformer()  # same seed, same weights, no cache
    assert acc.enable_step_cache(model, threshold=0.5)
    if compiled:  # the skip decision stays outside the compiled blocks (not run here: marks only)
        acc.compile_repeated_blocks(model)
        for block in acc.repeated_blocks(model):
            block._compiled_call_impl = None
    calls = {"n": 0}
    model.single_transformer_blocks[-1].register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    with torch.no_grad():
        first = model(**_flux2_inputs(timestep=0.9))[0]
        assert calls["n"] == 1 and torch.equal(first, full(**_flux2_inputs(timestep=0.9))[0])
        # nearly the same input a little later in the schedule: the first block barely changes
        second = model(**_flux2_inputs(timestep=0.899))[0]
        assert calls["n"] == 1  # the rest was skipped
        assert rel_err(second, full(**_flux2_inputs(timestep=0.899))[0]) < 0.05
        # a very different input: computed in full
        model(**_flux2_inputs(seed=9, timestep=0.898))
        assert calls["n"] == 2
        # a new image starts (the timestep goes up): reset, computed in full even for the same input
        model(**_flux2_inputs(seed=9, timestep=0.95))
        assert calls["n"] == 3
    assert acc.step_cache_stats(model) == {"calls": 4, "skipped": 1}
    assert [name for name, _ in model.named_modules()] == [name for name, _ in full.named_modules()]


def test_step_cache_unsupported_for_unet():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2)  # fmt: skip
    assert not acc.enable_step_cache(unet, 0.1)
    assert len(acc.repeated_blocks(unet)) == 4  # BasicTransformerBlock: down 1, up 2, mid 1
    assert acc.compile_repeated_blocks(unet) == 4 + 8  # and the ResNet blocks (down 2, mid 2, up 4)


def test_apply_fast_path_on_cpu_reports_what_applied():
    class Pipe:
        pass

    pipe = Pipe()
    pipe.transformer = tiny_flux2_transformer()
    report = acc.apply_fast_path(pipe, acc.parse_options("fp8+compile"), "flux2_dev_4bit")
    assert report.asked == "fp8+compile" and report.applied == "compile"
    assert report.details["compiled_blocks"] == 3
    assert acc.accelerate_engine(pipe, type("S", (), {"id": "x"})(), acc.FastPath()) is None
    # applied again (as the benchmarks do): compiled code is dropped, attention asked for is not
    # available on the CPU and reported as not applied
    again = acc.apply_fast_path(pipe, acc.parse_options("fp8+attn=fp8+compile"), "flux2_dev_4bit")
    assert again.applied == "compile" and again.details["compiled_blocks"] == 3
    assert not hasattr(pipe.transformer, "_flexy_fp8_attention") or pipe.transformer._flexy_fp8_attention is None


# ---- the engine manager's hook ------------------------------------------------------------------


def test_manager_applies_the_configured_fast_path_on_load(make_manager):
    manager = make_manager(fast_paths=acc.parse_fast_path("flux1_dev:cache=0.3,sd3_medium:off"))
    manager.load("flux1_dev")
    manager.load("sd3_medium")
    flux = manager.loaded("flux1_dev").pipeline.transformer
    assert acc.step_cache_stats(flux) is not None
    assert acc.step_cache_stats(manager.loaded("sd3_medium").pipeline.transformer) is None
    from flexy_worker.engines import GenerateRequest

    request = GenerateRequest(job_id="j", engine="flux1_dev", prompt="a cat", negative_prompt=None, seed=1, steps=4,
                              guidance=3.5, width=64, height=64)  # fmt: skip
    out = manager.generate(request, lambda event: None, lambda: False)
    assert out.images[0].shape == (64, 64, 3)
    assert acc.step_cache_stats(flux)["calls"] >= 4
    manager.unload()


def test_manager_without_fast_path_is_untouched(make_manager):
    manager = make_manager()
    manager.load("flux1_dev")
    assert acc.step_cache_stats(manager.loaded("flux1_dev").pipeline.transformer) is None
    manager.unload()


# ---- memory: FP8 only where it fits -------------------------------------------------------------


def _nf4_blocks(model: nn.Module) -> nn.Module:
    """The model's block Linear layers as bitsandbytes NF4 (as the 4-bit engine's checkpoint holds
    them), quantized on the CPU."""
    bnb = pytest.importorskip("bitsandbytes")
    for block in acc.repeated_blocks(model):
        for parent in list(block.modules()):
            for name, leaf in list(parent.named_children()):
                if type(leaf) is not nn.Linear:
                    continue
                layer = bnb.nn.Linear4bit(leaf.in_features, leaf.out_features, bias=leaf.bias is not None,
                                          compute_dtype=torch.float32, quant_type="nf4", device="meta")  # fmt: skip
                layer.weight = bnb.nn.Params4bit(leaf.weight.data, requires_grad=False, quant_type="nf4", blocksize=64,
                                                 module=layer)._quantize("cpu")  # fmt: skip
                if leaf.bias is not None:
                    layer.bias = nn.Parameter(leaf.bias.data.clone(), requires_grad=False)
                setattr(parent, name, layer)
    return model


def _tensor_bytes(model: nn.Module) -> int:
    from flexy_worker.residency import _held_tensors

    return sum(t.numel() * t.element_size() for t, _, _ in _held_tensors([model]))


@pytest.mark.parametrize("weights", ["dense", "nf4"])
def test_fp8_size_change_is_what_the_conversion_does(weights):
    model = tiny_flux2_transformer() if weights == "dense" else _nf4_blocks(tiny_flux2_transformer())
    predicted = acc.fp8_size_change(model)
    before = _tensor_bytes(model)
    acc.convert_to_fp8(model, "row")
    assert _tensor_bytes(model) - before == predicted
    assert (predicted < 0) == (weights == "dense")  # fp32/bf16 weights shrink; NF4 grows to about twice


def test_fit_to_memory_keeps_fp8_only_where_the_engine_still_fits():
    from types import SimpleNamespace

    from flexy_worker.residency import storage_bytes

    fast = acc.FastPath(compile=True, fp8="row", fast_accum=True, sdpa="cudnn")  # resolved on an FP8 card
    nf4 = SimpleNamespace(transformer=_nf4_blocks(tiny_flux2_transformer()))
    loaded = storage_bytes([nf4.transformer])
    grown = loaded + acc.fp8_size_change(nf4.transformer)
    assert grown > loaded

    kept, weighed = acc.fit_to_memory(fast, nf4, acc.MemoryRoom(budget_bytes=grown + 1000, others_bytes=1000, others=("sd3_medium",)))
    assert kept == fast and weighed["fp8_fits"] is True and weighed["memory_others"] == ["sd3_medium"]
    dropped, weighed = acc.fit_to_memory(fast, nf4, acc.MemoryRoom(budget_bytes=grown + 999, others_bytes=1000))
    assert dropped.describe() == "compile+sdpa=cudnn" and weighed["fp8_fits"] is False  # NF4 stays, compiled
    assert weighed["resident_bytes_as_loaded"] == loaded and weighed["resident_bytes_with_fp8"] == grown

    dense = SimpleNamespace(transformer=tiny_flux2_transformer())  # FP8 halves bf16 weights: it always fits better
    assert acc.fit_to_memory(fast, dense, acc.MemoryRoom(budget_bytes=1, others_bytes=0))[0] == fast
    assert acc.fit_to_memory(fast, nf4, None) == (fast, {})  # no budget given: as configured
    assert acc.fit_to_memory(acc.FastPath(compile=True), nf4, acc.MemoryRoom(1))[0] == acc.FastPath(compile=True)


def test_manager_weighs_the_fast_path_against_the_preload_set(make_manager, monkeypatch, catalog):
    seen = []

    def spy(pipeline, spec, path, device=None, warm=True, room=None):
        seen.append((spec.id, room))
        return None

    monkeypatch.setattr(acc, "accelerate_engine", spy)
    manager = make_manager(budget_bytes=40 * 10**9, fast_paths=acc.parse_fast_path("*:fast"))
    manager.keep_resident = ("sd3_medium", "flux1_dev", "flux2_dev_4bit")
    room = manager._fast_path_room("flux2_dev_4bit")
    estimate = {e: int(catalog[e].memory_estimate_gb * 1e9) for e in ("sd3_medium", "flux1_dev")}
    assert room.budget_bytes == 40 * 10**9 and room.others == ("sd3_medium", "flux1_dev")
    assert room.others_bytes == sum(estimate.values())  # nothing loaded yet: the catalog's estimates

    manager.load("sd3_medium")  # loaded: its real resident bytes count instead of the estimate
    engine, room = seen[-1]
    assert engine == "sd3_medium" and room.others == ("flux1_dev", "flux2_dev_4bit")
    room = manager._fast_path_room("flux2_dev_4bit")
    assert room.others_bytes == manager.residency_manager.engine_bytes("sd3_medium") + estimate["flux1_dev"]
    manager.unload()
