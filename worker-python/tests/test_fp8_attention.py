"""The 8-bit attention of flexy_worker.fp8_attention on the CPU: the blockwise algorithm's error in
plain PyTorch, the routing of diffusers' processors and its fallbacks, and the Triton kernels
themselves under Triton's interpreter (in a subprocess: TRITON_INTERPRET must be set before Triton
is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexy_worker import fp8_attention as fa
from tiny_models import tiny_flux2_transformer

TESTS = Path(__file__).resolve().parent


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def exact(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def qkv(seq=300, heads=2, dim=64, seed=0, k_offset=0.0, q_gain=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, seq, heads, dim, generator=g) * q_gain
    k = torch.randn(1, seq, heads, dim, generator=g) + k_offset * torch.randn(1, 1, heads, dim, generator=g)
    v = torch.randn(1, seq, heads, dim, generator=g)
    return tuple(t.to(torch.bfloat16) for t in (q, k, v))


# ---- the algorithm, in PyTorch ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "bound"),
    # e4m3 keeps 3 mantissa bits (about 3 % rms a product), int8 with per-token scales about 1 %; the
    # bounds are what 8-bit arithmetic can give on near-uniform attention, where the relative error of
    # the (small) output is largest.
    [("fp8", 0.07), ("fp8qk", 0.05), ("int8", 0.05), ("int8qk", 0.02)],
)
def test_blockwise_algorithm_error_against_exact_attention(mode, bound):
    q, k, v = qkv(k_offset=1.0)
    qk, pv = fa.MODES[mode]
    out = fa.reference_fp8_attention(q, k, v, qk=qk, pv=pv)
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    err = rel_err(out, exact(q, k, v))
    assert 0.002 < err < bound  # really quantized, and not more than 8 bits cost


def test_int8_scores_round_finer_than_e4m3():
    q, k, v = qkv(q_gain=3.0)  # peaky attention: the score error matters most
    fp8 = rel_err(fa.reference_fp8_attention(q, k, v, qk="fp8", pv="bf16"), exact(q, k, v))
    int8 = rel_err(fa.reference_fp8_attention(q, k, v, qk="int8", pv="bf16"), exact(q, k, v))
    assert int8 < fp8 / 2


def test_smoothing_k_keeps_softmax_exact_and_helps_with_channel_offsets():
    q, k, v = qkv(k_offset=8.0)  # keys sharing a large offset: most of K's range is the offset
    smooth = rel_err(fa.reference_fp8_attention(q, k, v, qk="int8", pv="bf16", smooth_k=True), exact(q, k, v))
    plain = rel_err(fa.reference_fp8_attention(q, k, v, qk="int8", pv="bf16", smooth_k=False), exact(q, k, v))
    assert smooth < plain / 2
    # subtracting any per-head vector from every key leaves exact attention unchanged (softmax shift)
    shifted = (k.float() - k.float().mean(1, keepdim=True)).to(torch.bfloat16)
    assert rel_err(exact(q, shifted, v), exact(q, k, v)) < 0.01


def test_blockwise_algorithm_block_size_and_padding():
    q, k, v = qkv(seq=200)  # not a multiple of the 128-token quantization block
    a = fa.reference_fp8_attention(q, k, v, qk="int8", pv="fp8", block_n=64)
    b = fa.reference_fp8_attention(q, k, v, qk="int8", pv="fp8", block_n=128)
    assert torch.isfinite(a).all() and rel_err(a, exact(q, k, v)) < 0.05
    assert rel_err(a, b) < 0.02  # the online softmax's blocking changes only P's rounding


# ---- routing and fallbacks ----------------------------------------------------------------------


def test_supported_only_where_the_kernel_applies():
    q, k, v = qkv(dim=128)
    assert not fa.supported(q, k, v)  # CPU tensors: the normal path
    fa._ALLOW_CPU["value"] = True
    try:
        assert fa.supported(q, k, v)
        assert not fa.supported(q, k, v, attn_mask=torch.ones(1, 1, 300, 300, dtype=torch.bool))
        assert not fa.supported(q, k, v, is_causal=True)
        assert not fa.supported(q, k, v, dropout_p=0.1)
        assert not fa.supported(q.float(), k.float(), v.float())  # fp32
        small = qkv(dim=32)
        assert not fa.supported(*small)  # head_dim not 64/128
        assert not fa.supported(q, k[:, :100], v[:, :100])  # cross-attention lengths
    finally:
        fa._ALLOW_CPU["value"] = False


def _flux2_inputs():
    g = torch.Generator().manual_seed(4)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), torch.zeros(1), indexing="ij"), -1)
    return {"hidden_states": torch.randn(1, 16, 16, generator=g), "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
            "timestep": torch.tensor([0.5]), "guidance": torch.tensor([4.0]), "img_ids": ids.reshape(-1, 4),
            "txt_ids": torch.zeros(8, 4), "return_dict": False}  # fmt: skip


def test_install_routes_processors_and_falls_back_on_cpu():
    model = tiny_flux2_transformer(head_dim=64)
    inputs = _flux2_inputs()
    with torch.no_grad():
        ref = model(**inputs)[0]
        assert fa.install(model, "fp8") == 3  # one double-stream and two single-stream blocks
        assert fa.installed_mode(model) == "fp8"
        backends = {p._attention_backend for p in fa._processors(model)}
        assert backends == {"flexy-fp8"}
        out = model(**inputs)[0]  # CPU float32: not supported, diffusers' own path, bit for bit
        assert torch.equal(out, ref)
        assert fa.install(model, "int8qk") == 3  # switching modes keeps the original backend to restore
        assert fa.uninstall(model) == 3
        assert fa.installed_mode(model) is None
        assert all("_attention_backend" not in p.__dict__ for p in fa._processors(model))
        assert torch.equal(model(**inputs)[0], ref)
    with pytest.raises(ValueError):
        fa.install(model, "fp4")


def test_dispatch_falls_back_for_masks_and_untagged_backends(monkeypatch):
    from diffusers.models import attention_dispatch

    seen = []
    original = attention_dispatch.dispatch_attention_fn

    def spy(*args, **kwargs):
        seen.append(kwargs.get("backend"))
        return original(*args, **kwargs)

    monkeypatch.setitem(fa._ORIGINAL_DISPATCH, "fn", spy)
    q, k, v = qkv(dim=64)
    fa._ALLOW_CPU["value"] = True
    try:
        mask = torch.ones(1, 1, 300, 300, dtype=torch.bool)
        out = fa._dispatch_attention(q, k, v, attn_mask=mask, backend="flexy-fp8")  # a mask: the normal path
        assert seen == [None] and rel_err(out, exact(q, k, v)) < 0.01
        fa._dispatch_attention(q, k, v)  # an untagged processor: untouched
        assert seen == [None, None]
    finally:
        fa._ALLOW_CPU["value"] = False


def test_self_test_on_cpu_reports_failure_instead_of_raising():
    result = fa.self_test("cpu", "fp8", seq=128, heads=1)
    assert result["ok"] is False and result["error"]


# ---- the Triton kernels, under the interpreter --------------------------------------------------


@pytest.fixture(scope="module")
def interpreted():
    if not fa.HAS_TRITON:
        pytest.skip("no Triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(TESTS.parent))
    proc = subprocess.run([sys.executable, str(TESTS / "fp8_attention_interpreter_check.py")], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_kernels_match_the_blockwise_emulation(interpreted):
    cases = interpreted["kernels"]
    assert len(cases) == 4
    for case in cases:
        assert case["shape_ok"] and case["finite"], case
        # the same arithmetic; fp32 summation order and rare rounding-boundary flips of P differ
        assert case["kernel_vs_emulation"] < 0.01, case
        assert case["kernel_vs_exact"] < 0.07, case
        assert abs(case["kernel_vs_exact"] - case["emulation_vs_exact"]) < 0.005, case


def test_kernel_inside_a_model_one_graph_and_custom_op_checks(interpreted):
    model = interpreted["model"]
    assert model["routed"] == 3 and model["calls_eager"] == 3
    assert model["rel_vs_unrouted"] < 0.05
    assert model["graph_breaks"] == 0 and model["graphs"] == 1
    assert model["restored_exactly"]
    assert set(model["opcheck"].values()) == {"SUCCESS"}
