"""cuDNN's FP8 attention (flexy_worker.cudnn_attention) on the CPU: the custom op's CPU implementation
is the same quantized arithmetic the kernel does (e4m3 Q, K, V, P and O with per-tensor scales), so
its error, the routing of diffusers' processors through it and its tracing under torch.compile are
checked here; the kernel itself runs on Hopper and Blackwell only (bench/gpu, suite flux2-libs)."""

from __future__ import annotations

import math

import pytest
import torch

from flexy_worker import acceleration as acc
from flexy_worker import cudnn_attention as ca
from flexy_worker import fp8_attention as fa
from tiny_models import tiny_flux2_transformer


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def qkv(seq=300, heads=2, dim=64, seed=0, q_gain=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, seq, heads, dim, generator=g) * q_gain
    k, v = torch.randn(1, seq, heads, dim, generator=g), torch.randn(1, seq, heads, dim, generator=g) * 3
    return tuple(t.to(torch.bfloat16) for t in (q, k, v))


def exact(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def test_quantize_takes_the_largest_power_of_two_scale_that_fits():
    x = torch.randn(2, 50, 3, 64) * 7.3
    q8, descale = ca.quantize(x)
    multiplier = float(1 / descale)
    assert q8.dtype == torch.float8_e4m3fn and descale.shape == (1, 1, 1, 1)
    assert math.log2(multiplier) == int(math.log2(multiplier))  # exact scale and inverse
    amax = float(x.abs().max())
    assert 224 < amax * multiplier <= 448  # the range is used, nothing saturates
    assert rel_err(q8.float() * descale, x) < 0.04  # 3 mantissa bits


@pytest.mark.parametrize(("q_gain", "bound"), [(1.0, 0.08), (3.0, 0.12)])
def test_fp8_attention_error_against_exact(q_gain, bound):
    # Near-uniform attention (random scores) is the worst case for the relative error of its small
    # output; every stage (Q/K, V, P, O in e4m3) adds about 2.5 %.
    q, k, v = qkv(q_gain=q_gain)
    out = ca.cudnn_fp8_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert 0.01 < rel_err(out, exact(q, k, v)) < bound


def test_output_scale_cannot_overflow():
    # One key takes all the weight: O equals the largest V row, the bound the output scale assumes.
    q, k, v = qkv(seq=64)
    k = torch.zeros_like(k)
    k[:, 5] = 40.0
    q = torch.ones_like(q)
    v[:, 5] = v.float().abs().amax().to(v.dtype)
    out = ca.cudnn_fp8_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert rel_err(out, exact(q, k, v)) < 0.08


def _inputs():
    g = torch.Generator().manual_seed(4)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), torch.zeros(1), indexing="ij"), -1)
    bf16 = torch.bfloat16
    return {"hidden_states": torch.randn(1, 16, 16, generator=g).to(bf16), "encoder_hidden_states": torch.randn(1, 8, 32, generator=g).to(bf16),
            "timestep": torch.tensor([0.5], dtype=bf16), "guidance": torch.tensor([4.0]), "img_ids": ids.reshape(-1, 4),
            "txt_ids": torch.zeros(8, 4), "return_dict": False}  # fmt: skip


@pytest.fixture
def cpu_routing():
    fa._ALLOW_CPU["value"] = True  # the op's CPU implementation stands in for the kernel
    yield
    fa._ALLOW_CPU["value"] = False


def test_processors_route_through_the_op_and_back(cpu_routing, monkeypatch):
    calls = []
    real = ca.cudnn_fp8_attention
    monkeypatch.setattr(ca, "cudnn_fp8_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    model, inputs = tiny_flux2_transformer(head_dim=64).to(torch.bfloat16), _inputs()
    with torch.no_grad():
        ref = model(**inputs)[0]
        assert fa.install(model, "cudnn-fp8") == 3  # one double-stream, two single-stream blocks
        assert {p._attention_backend for p in fa._processors(model)} == {"flexy-cudnn-fp8"}
        out = model(**inputs)[0]
        assert len(calls) == 3 and all(shape == (1, 24, 2, 64) for shape in calls)  # 16 image + 8 text tokens
        assert not torch.equal(out, ref) and rel_err(out, ref) < 0.05
        assert fa.uninstall(model) == 3
        assert torch.equal(model(**inputs)[0], ref)


def test_compiled_blocks_trace_the_op_in_one_graph(cpu_routing):
    model, inputs = tiny_flux2_transformer(head_dim=64).to(torch.bfloat16), _inputs()
    fa.install(model, "cudnn-fp8")
    with torch.no_grad():
        eager = model(**inputs)[0]
        for block in acc.repeated_blocks(model):  # fullgraph: a graph break would raise
            block.compile(backend="aot_eager", fullgraph=True, dynamic=False)
        compiled = model(**inputs)[0]
    torch._dynamo.reset()
    assert rel_err(compiled, eager) < 1e-3


def test_option_parses_and_is_dropped_where_it_cannot_run():
    path = acc.parse_options("fp8+accum=fast+attn=cudnn-fp8+compile+sdpa=cudnn")
    assert path.attention == "cudnn-fp8" and path.describe() == "fp8+accum=fast+attn=cudnn-fp8+compile+sdpa=cudnn"
    ok, why = ca.available("cpu")
    assert not ok and "CUDA" in why
    assert not acc.attention_available("cpu", "cudnn-fp8")
    assert path.resolve("cpu").attention is None
    check = ca.self_test("cpu")
    assert check["ok"] is False and check["error"]
