"""8-bit attention for the DiT denoisers: a Triton flash-attention forward whose Q·Kᵀ (and optionally
P·V) runs on the 8-bit tensor cores (FP8 e4m3 or int8: Ada, Hopper, Blackwell).

What it computes, for q, k, v in diffusers' (batch, tokens, heads, head_dim) layout, bf16 or fp16,
no mask, not causal, head_dim 64 or 128:

* K is smoothed: a per-(batch, head) vector (the mean of up to 256 evenly spaced tokens) is
  subtracted from every key. That shifts each row of scores by a constant (q·mean), which softmax
  cancels exactly (any vector would), and removes channel offsets that would eat the 8-bit range.
* K is quantized with one scale per (batch, head, block of 128 tokens), in a pre-pass that writes
  (B*H, tokens, D) rows; Q with one scale per token, inside the attention kernel as each program
  loads its rows (no extra pass). Format ``qk="fp8"`` (e4m3) or ``qk="int8"``: the same tensor-core
  rate on Hopper, and int8 rounds about 3x finer for these near-Gaussian, well-scaled values (the
  e4m3 grid is relative, 3 mantissa bits; int8 is absolute, 1/127 of the block's largest value).
* scores = (q8·k8ᵀ) · q_scale · k_scale · softmax_scale · log2(e), exponentiated with exp2 in an
  online softmax (fp32).
* P·V, ``pv="fp8"``: P (in [0, 1]) is scaled by 448 and quantized to e4m3, V is quantized per
  (block of 128 tokens, channel) and stored transposed, (head_dim, tokens), because Hopper's FP8
  wgmma wants its B operand K-major; each block's product starts from zero and is scaled into the
  fp32 accumulator, so the tensor cores' reduced-precision FP8 accumulation spans one block only.
  ``pv="bf16"``: P is rounded to bf16 and multiplied with V as given (half the 8-bit speed-up).

Error against fp32 attention on random inputs (CPU emulation, 2 x 640 x 128, K with a channel
offset; near-uniform / peaky (scores x3) attention): fp8 5.0 / 8.1 %, fp8qk 3.7 / 7.7 %, int8
3.6 / 3.5 %, int8qk 1.1 / 2.2 %; cuDNN bf16 0.2 %. Near-uniform attention is the worst case for the
relative error of its (small) output; what it does to a whole model is measured by the bench.

The kernel is registered as the custom op ``flexy::fp8_attention`` (with a fake implementation),
so a regional ``torch.compile`` keeps one graph per block; ``install(denoiser, mode)`` routes the
processors that call diffusers' ``dispatch_attention_fn`` (FLUX.2, FLUX.1) through it, and every
call it does not support (a mask, dropout, causal, another head size, CPU) takes the normal path.
``reference_fp8_attention`` is the same blockwise algorithm in plain PyTorch (tests, CPU).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

try:  # the worker runs without Triton on machines that have none (CPU-only installs)
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    libdevice = None
    HAS_TRITON = False

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except Exception:  # pragma: no cover
    TensorDescriptor = None

FP8_MAX = 448.0  # largest finite float8 e4m3fn
QBLK = 128  # tokens per K/V quantization block; the kernel's BLOCK_N divides it
K_MEAN_SAMPLES = 256  # tokens averaged for the K smoothing vector (any vector keeps softmax exact)
HEAD_DIMS = (64, 128)
# option name -> (Q·Kᵀ format, P·V format). int8 Q·Kᵀ runs on the same tensor cores at the same rate as
# e4m3 and, with per-token / per-block scales after smoothing, rounds about 3x finer (see above).
MODES = {"fp8": ("fp8", "fp8"), "fp8qk": ("fp8", "bf16"), "int8": ("int8", "fp8"), "int8qk": ("int8", "bf16")}
CUDNN_MODE = "cudnn-fp8"  # cuDNN's own FP8 kernel (flexy_worker.cudnn_attention), routed the same way
_BACKEND_TAGS = {mode: f"flexy-{mode}" for mode in (*MODES, CUDNN_MODE)}  # processors' _attention_backend while installed
_TAG_TO_MODE = {tag: mode for mode, tag in _BACKEND_TAGS.items()}
LOADER_ENV = "FLEXY_FP8_ATTN_LOADER"  # "tma" | "ptr": override the global-memory loader


def interpreting() -> bool:
    """Triton's CPU interpreter is on (TRITON_INTERPRET=1 before Triton was imported)."""
    if not HAS_TRITON:
        return False
    try:
        return bool(triton.knobs.runtime.interpret)
    except Exception:
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---- Triton kernels -----------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _to_e4m3(x, EMULATE: tl.constexpr):
        """fp32 -> float8 e4m3 (round to nearest even; |x| <= 448 by construction)."""
        if EMULATE:
            # Triton's interpreter mis-rounds fp8 casts (no carry into the exponent, no ties-to-even):
            # snap to the e4m3 grid in fp32 first, so the cast itself is exact.
            ax = tl.abs(x)
            e = ((ax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
            e = tl.maximum(e, -6)  # below 2^-6 e4m3 is subnormal: fixed spacing 2^-9
            spacing = ((e - 3 + 127) << 23).to(tl.float32, bitcast=True)
            y = ((ax / spacing + 12582912.0) - 12582912.0) * spacing  # + 1.5 * 2^23: round to integer, ties to even
            y = tl.minimum(y, 448.0)
            x = tl.where(x < 0, -y, y)
        return x.to(tl.float8e4nv)

    @triton.jit
    def _to_qk(x, QK_INT8: tl.constexpr, EMULATE: tl.constexpr):
        """Already scaled to the format's range: int8 (round to nearest even) or float8 e4m3."""
        if QK_INT8:
            if EMULATE:  # no libdevice in the interpreter; numpy keeps (x + c) - c as written
                r = (x + 12582912.0) - 12582912.0  # + 1.5 * 2^23: round to integer, ties to even
            else:
                r = libdevice.rint(x)
            return tl.minimum(tl.maximum(r, -127.0), 127.0).to(tl.int8)
        else:
            return _to_e4m3(x, EMULATE)

    @triton.jit
    def _qk_max(QK_INT8: tl.constexpr):
        if QK_INT8:
            return 127.0
        else:
            return 448.0

    @triton.jit
    def _bf16_grid(x):
        """Round fp32 to the nearest bf16 value, staying fp32 (the interpreter's casts truncate)."""
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _k_mean_kernel(K, MEAN, stride_kb, stride_ks, stride_kh, H, n_samp, step,
                       HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        cols = tl.arange(0, HEAD_DIM)
        base = K + b * stride_kb + h * stride_kh
        total = tl.zeros([HEAD_DIM], dtype=tl.float32)
        for start in range(0, n_samp, CHUNK):
            idx = start + tl.arange(0, CHUNK)
            rows = idx * step
            x = tl.load(base + rows[:, None] * stride_ks + cols[None, :], mask=(idx < n_samp)[:, None], other=0.0)
            total += tl.sum(x.to(tl.float32), axis=0)
        tl.store(MEAN + bh * HEAD_DIM + cols, total / n_samp)

    @triton.jit
    def _kv_quant_kernel(K, V, MEAN, K8, KS, VT, VS,
                         stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                         H, S, S_PAD,
                         HEAD_DIM: tl.constexpr, QB: tl.constexpr, SMOOTH_K: tl.constexpr, QUANT_V: tl.constexpr,
                         QK_INT8: tl.constexpr, EMULATE: tl.constexpr):  # fmt: skip
        """One program per (block of QB tokens, batch*head): K block -> rows of K8 (e4m3 or int8;
        tokens padded to S_PAD with zeros) and one scale; V block -> e4m3 columns of VT (transposed)
        and one scale per channel."""
        blk = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        n_blk = S_PAD // QB
        rows = blk * QB + tl.arange(0, QB)
        cols = tl.arange(0, HEAD_DIM)
        valid = (rows < S)[:, None]
        k = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + cols[None, :], mask=valid, other=0.0)
        k = k.to(tl.float32)
        if SMOOTH_K:
            mean = tl.load(MEAN + bh * HEAD_DIM + cols)
            k = tl.where(valid, k - mean[None, :], 0.0)
        qmax = _qk_max(QK_INT8)
        amax = tl.maximum(tl.max(tl.max(tl.abs(k), axis=1), axis=0), 1e-12)
        k8 = _to_qk(k * (qmax / amax), QK_INT8, EMULATE)
        out_rows = bh.to(tl.int64) * S_PAD + rows
        tl.store(K8 + out_rows[:, None] * HEAD_DIM + cols[None, :], k8)
        tl.store(KS + bh * n_blk + blk, amax / qmax)
        if QUANT_V:
            v = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vs + cols[None, :], mask=valid, other=0.0)
            v = v.to(tl.float32)
            vmax = tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12)  # per channel
            v8 = _to_e4m3(v * (448.0 / vmax)[None, :], EMULATE)
            vt_rows = bh.to(tl.int64) * HEAD_DIM + cols
            tl.store(VT + vt_rows[None, :] * S_PAD + rows[:, None], v8)
            tl.store(VS + (bh * n_blk + blk) * HEAD_DIM + cols, vmax / 448.0)

    @triton.jit
    def _attn_fwd_kernel(Q, K8, KS, V, VS, O,
                         stride_qb, stride_qs, stride_qh, stride_vb, stride_vs, stride_vh,
                         stride_ob, stride_os, stride_oh,
                         H, S, S_PAD, qk_scale,
                         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, QB: tl.constexpr,
                         PV_FP8: tl.constexpr, QK_INT8: tl.constexpr, USE_TMA: tl.constexpr, MASK_N: tl.constexpr,
                         EMULATE: tl.constexpr):  # fmt: skip
        """One program per (block of BLOCK_M queries, batch*head). With USE_TMA, Q, K8, V/VT and O
        are tensor descriptors (Hopper's TMA); otherwise pointers with the given strides."""
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        n_blk = S_PAD // QB
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)

        if USE_TMA:  # Q as (B*S, H*D): rows past S belong to the next batch and are never stored
            q = Q.load([b * S + pid_m * BLOCK_M, h * HEAD_DIM])
        else:
            q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
            q = tl.load(q_base + offs_m[:, None] * stride_qs + offs_d[None, :], mask=(offs_m < S)[:, None], other=0.0)
        out_ty = q.dtype
        q = q.to(tl.float32)
        qmax = _qk_max(QK_INT8)
        q_amax = tl.maximum(tl.max(tl.abs(q), axis=1), 1e-12)  # one scale per token
        q8 = _to_qk(q * (qmax / q_amax)[:, None], QK_INT8, EMULATE)
        row_scale = q_amax * (qk_scale / qmax)  # q dequantization x softmax scale x log2(e)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        k_row0 = bh.to(tl.int64) * S_PAD
        for start_n in range(0, S_PAD, BLOCK_N):
            if USE_TMA:  # TMA coordinates are 32-bit
                k = K8.load([bh * S_PAD + start_n, 0])
            else:
                k = tl.load(K8 + (k_row0 + start_n + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
            blk = start_n // QB
            scale = row_scale * tl.load(KS + bh * n_blk + blk)
            if QK_INT8:
                s = tl.dot(q8, tl.trans(k), out_dtype=tl.int32).to(tl.float32)
            else:
                s = tl.dot(q8, tl.trans(k))
            if MASK_N:
                s = tl.where((start_n + offs_n)[None, :] < S, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1) * scale)  # scale > 0: max commutes with it
            p = tl.math.exp2(s * scale[:, None] - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None]
            if PV_FP8:
                if USE_TMA:
                    vt = V.load([bh * HEAD_DIM, start_n])
                else:
                    vt = tl.load(V + (bh.to(tl.int64) * HEAD_DIM + offs_d)[:, None] * S_PAD + (start_n + offs_n)[None, :])
                v_scale = tl.load(VS + (bh * n_blk + blk) * HEAD_DIM + offs_d) * (1.0 / 448.0)
                p8 = _to_e4m3(p * 448.0, EMULATE)
                acc += tl.dot(p8, tl.trans(vt)) * v_scale[None, :]
            else:
                if USE_TMA:
                    v = V.load([b * S + start_n, h * HEAD_DIM])
                else:
                    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
                    v = tl.load(v_base + (start_n + offs_n)[:, None] * stride_vs + offs_d[None, :],
                                mask=((start_n + offs_n) < S)[:, None], other=0.0)  # fmt: skip
                if EMULATE:  # the interpreter multiplies bf16 bit patterns as integers: stay in fp32
                    acc = tl.dot(_bf16_grid(p), v.to(tl.float32), acc)
                else:
                    acc = tl.dot(p.to(v.dtype), v, acc)
            m_i = m_new
        out = acc / l_i[:, None]
        if EMULATE:  # the interpreter truncates fp32 -> bf16 casts
            out = _bf16_grid(out)
        out = out.to(out_ty)
        if USE_TMA:
            O.store([b, pid_m * BLOCK_M, h * HEAD_DIM], out.reshape(1, BLOCK_M, HEAD_DIM))
        else:
            o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
            tl.store(o_base + offs_m[:, None] * stride_os + offs_d[None, :], out, mask=(offs_m < S)[:, None])

    def _set_block_shapes(nargs: dict[str, Any]) -> None:
        """Autotune pre-hook: host tensor descriptors carry their block shape, which is the config's."""
        if TensorDescriptor is None or not isinstance(nargs["Q"], TensorDescriptor):
            return
        bm, bn, d = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["HEAD_DIM"]
        nargs["Q"].block_shape = [bm, d]
        nargs["K8"].block_shape = [bn, d]
        nargs["V"].block_shape = [d, bn] if nargs["PV_FP8"] else [bn, d]
        nargs["O"].block_shape = [1, bm, d]

    # BLOCK_N must divide QBLK (one K/V scale per BLOCK_N keys). 128x128 with 8 warps keeps the
    # fp32 score tile and accumulator in registers (two warpgroups of 64 rows).
    _CONFIGS = [
        (128, 128, 8, 3),
        (128, 128, 8, 2),
        (128, 64, 4, 3),
        (128, 64, 8, 4),
        (64, 128, 4, 3),
    ]
    _attn_fwd_tuned = triton.autotune(
        configs=[triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s, pre_hook=_set_block_shapes)
                 for m, n, w, s in _CONFIGS],  # fmt: skip
        key=["S", "HEAD_DIM", "PV_FP8", "QK_INT8", "USE_TMA", "MASK_N"],
    )(_attn_fwd_kernel)


# ---- host side ----------------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def default_loader(device: torch.device) -> str:
    """'tma' (Hopper's tensor memory accelerator, compute capability 9.0+) or 'ptr' (plain loads)."""
    forced = os.environ.get(LOADER_ENV)
    if forced in ("tma", "ptr"):
        return forced
    if _DEFAULT_LOADER.get("value"):
        return _DEFAULT_LOADER["value"]
    if device.type == "cuda" and TensorDescriptor is not None and torch.cuda.get_device_capability(device) >= (9, 0):
        return "tma"
    return "ptr"


_DEFAULT_LOADER: dict[str, str | None] = {"value": None}


def set_default_loader(loader: str | None) -> None:
    """Process-wide loader for calls that do not name one (the self-test falls back to 'ptr')."""
    if loader not in (None, "tma", "ptr"):
        raise ValueError(f"loader {loader!r}")
    _DEFAULT_LOADER["value"] = loader


def _tma_rows_ok(t: torch.Tensor) -> bool:
    """t (B, S, H, D) can be read as the 2-D (B*S, H*D) matrix a TMA descriptor describes."""
    b, s, h, d = t.shape
    st = t.stride()
    return (st[3] == 1 and st[2] == d and (b == 1 or st[0] == s * st[1]) and (st[1] * t.element_size()) % 16 == 0
            and t.data_ptr() % 16 == 0)  # fmt: skip


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk: str, pv: str) -> None:
    if not HAS_TRITON:
        raise RuntimeError("fp8 attention needs Triton")
    if pv not in ("fp8", "bf16") or qk not in ("fp8", "int8"):
        raise ValueError(f"qk={qk!r}, pv={pv!r}: expected qk fp8|int8, pv fp8|bf16")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[-1]} not in {HEAD_DIMS}")


def quantize_kv(k: torch.Tensor, v: torch.Tensor, *, qk: str = "fp8", pv: str = "fp8",
                smooth_k: bool = True) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The pre-pass: K (smoothed) -> (B*H*S_pad, D) e4m3/int8 + (B*H, S_pad/128) scales; with
    pv='fp8' also V -> (B*H*D, S_pad) e4m3, transposed, + (B*H, S_pad/128, D) scales.
    Returns (k8, k_scale, vt, v_scale); vt and v_scale are placeholders for pv='bf16'."""
    bsz, seq, heads, dim = k.shape
    device = k.device
    emulate = interpreting()
    s_pad = _cdiv(seq, QBLK) * QBLK
    bh, n_blk = bsz * heads, s_pad // QBLK
    f32, fp8 = torch.float32, torch.float8_e4m3fn
    mean = torch.empty((bh, dim), device=device, dtype=f32)
    if smooth_k:
        n_samp = min(seq, K_MEAN_SAMPLES)
        _k_mean_kernel[(bh,)](k, mean, k.stride(0), k.stride(1), k.stride(2), heads, n_samp, seq // n_samp,
                              HEAD_DIM=dim, CHUNK=64)  # fmt: skip
    k8 = torch.empty((bh * s_pad, dim), device=device, dtype=torch.int8 if qk == "int8" else fp8)
    k_scale = torch.empty((bh, n_blk), device=device, dtype=f32)
    if pv == "fp8":
        vt = torch.empty((bh * dim, s_pad), device=device, dtype=fp8)
        v_scale = torch.empty((bh, n_blk, dim), device=device, dtype=f32)
    else:
        vt, v_scale = k8, k_scale  # unused placeholders
    _kv_quant_kernel[(n_blk, bh)](
        k, v, mean, k8, k_scale, vt, v_scale,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        heads, seq, s_pad, HEAD_DIM=dim, QB=QBLK, SMOOTH_K=smooth_k, QUANT_V=pv == "fp8", QK_INT8=qk == "int8",
        EMULATE=emulate,
    )  # fmt: skip
    return k8, k_scale, vt, v_scale


def fp8_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    *,
    qk: str = "fp8",
    pv: str = "fp8",
    smooth_k: bool = True,
    loader: str | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Attention of q, k, v (B, S, H, D) -> (B, S, H, D), contiguous, in q's dtype.
    config = (BLOCK_M, BLOCK_N, num_warps, num_stages) skips autotuning (tests, the interpreter)."""
    _check(q, k, v, qk, pv)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    k8, k_scale, vt, v_scale = quantize_kv(k, v, qk=qk, pv=pv, smooth_k=smooth_k)
    return attention_from_quantized(q, v, k8, k_scale, vt, v_scale, scale, qk=qk, pv=pv, loader=loader, config=config)


def attention_from_quantized(q: torch.Tensor, v: torch.Tensor, k8: torch.Tensor, k_scale: torch.Tensor,
                             vt: torch.Tensor, v_scale: torch.Tensor, scale: float | None = None, *,
                             qk: str = "fp8", pv: str = "fp8", loader: str | None = None,
                             config: tuple[int, int, int, int] | None = None) -> torch.Tensor:  # fmt: skip
    """The attention kernel on quantize_kv's output (q and, for pv='bf16', v as given)."""
    bsz, seq, heads, dim = q.shape
    device = q.device
    loader = loader or default_loader(device)
    use_tma = loader == "tma"
    emulate = interpreting()
    pv_fp8, qk_int8 = pv == "fp8", qk == "int8"
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(dim)) * 1.4426950408889634  # x log2(e): exp2
    s_pad = _cdiv(seq, QBLK) * QBLK
    bh = bsz * heads
    out = torch.empty((bsz, seq, heads, dim), device=device, dtype=q.dtype)
    if use_tma and not _tma_rows_ok(q):
        q = q.clone(memory_format=torch.contiguous_format)  # a fresh, aligned copy (contiguous() may be a no-op)
    if use_tma and not pv_fp8 and not _tma_rows_ok(v):
        v = v.clone(memory_format=torch.contiguous_format)
    q_arg, k_arg, o_arg = q, k8, out
    v_arg = vt if pv_fp8 else v
    if config is None and emulate:
        config = (64, 64, 4, 1)  # the interpreter has no device to autotune on
    if use_tma:
        # Block shapes are set per config (_set_block_shapes); these placeholders are overwritten.
        bm, bn = (config[0], config[1]) if config else (64, 64)
        q_arg = TensorDescriptor(q, [bsz * seq, heads * dim], [q.stride(1), 1], [bm, dim])
        k_arg = TensorDescriptor(k8, [bh * s_pad, dim], [dim, 1], [bn, dim])
        if pv_fp8:
            v_arg = TensorDescriptor(vt, [bh * dim, s_pad], [s_pad, 1], [dim, bn])
        else:
            v_arg = TensorDescriptor(v, [bsz * seq, heads * dim], [v.stride(1), 1], [bn, dim])
        o_arg = TensorDescriptor(out, [bsz, seq, heads * dim], [seq * heads * dim, heads * dim, 1], [1, bm, dim])
    args = (q_arg, k_arg, k_scale, v_arg, v_scale, o_arg,
            q.stride(0), q.stride(1), q.stride(2), v.stride(0), v.stride(1), v.stride(2),
            out.stride(0), out.stride(1), out.stride(2), heads, seq, s_pad, qk_scale)  # fmt: skip
    meta = {"HEAD_DIM": dim, "QB": QBLK, "PV_FP8": pv_fp8, "QK_INT8": qk_int8, "USE_TMA": use_tma, "MASK_N": seq != s_pad, "EMULATE": emulate}
    if config is not None:
        bm, bn, warps, stages = config
        if QBLK % bn:
            raise ValueError(f"BLOCK_N {bn} must divide {QBLK}")
        _attn_fwd_kernel[(_cdiv(seq, bm), bh)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    else:
        _attn_fwd_tuned[lambda m: (_cdiv(seq, m["BLOCK_M"]), bh)](*args, **meta)
    return out


# ---- the same algorithm in PyTorch (tests, CPU) -------------------------------------------------


def _e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()


def _int8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).clamp(-127, 127)  # torch.round: ties to even, as the kernel


def reference_fp8_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, *, qk: str = "fp8",
    pv: str = "fp8", smooth_k: bool = True, block_n: int = 128,
) -> torch.Tensor:  # fmt: skip
    """The kernel's arithmetic step by step in fp32 PyTorch (same scales, same smoothing samples,
    same online softmax over blocks of block_n keys): what the kernel should return, up to the
    order of fp32 additions."""
    bsz, seq, heads, dim = q.shape
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    # the kernel receives qk_scale as an fp32 argument and divides in fp32
    qk_scale = torch.tensor((scale if scale is not None else 1.0 / math.sqrt(dim)) * 1.4426950408889634)
    qmax, to_qk = (127.0, _int8) if qk == "int8" else (FP8_MAX, _e4m3)
    q_amax = qf.abs().amax(-1).clamp_min(1e-12)
    q8 = to_qk(qf * (qmax / q_amax)[..., None])
    row_scale = q_amax * (qk_scale / torch.tensor(qmax))
    if smooth_k:
        n_samp = min(seq, K_MEAN_SAMPLES)
        rows = torch.arange(n_samp) * (seq // n_samp)
        kf = kf - kf[:, :, rows].mean(2, keepdim=True)
    s_pad = _cdiv(seq, QBLK) * QBLK
    pad = s_pad - seq
    kp = torch.nn.functional.pad(kf, (0, 0, 0, pad))
    vp = torch.nn.functional.pad(vf, (0, 0, 0, pad))
    n_blk = s_pad // QBLK
    k_amax = kp.reshape(bsz, heads, n_blk, QBLK * dim).abs().amax(-1).clamp_min(1e-12)  # (B, H, n_blk)
    k8 = to_qk(kp * (qmax / k_amax).repeat_interleave(QBLK, -1)[..., None])
    v_amax = vp.reshape(bsz, heads, n_blk, QBLK, dim).abs().amax(-2).clamp_min(1e-12)  # (B, H, n_blk, D)
    v8 = _e4m3(vp * (FP8_MAX / v_amax).repeat_interleave(QBLK, -2))
    m_i = torch.full((bsz, heads, seq), float("-inf"))
    l_i = torch.zeros((bsz, heads, seq))
    acc = torch.zeros((bsz, heads, seq, dim))
    for start in range(0, s_pad, block_n):
        blk = start // QBLK
        cols = slice(start, start + block_n)
        s = q8 @ k8[:, :, cols].transpose(-1, -2)
        valid = torch.arange(start, start + block_n) < seq
        s = s.masked_fill(~valid, float("-inf"))
        sc = row_scale * (k_amax[..., blk] / qmax)[..., None]
        m_new = torch.maximum(m_i, s.amax(-1) * sc)
        p = torch.exp2(s * sc[..., None] - m_new[..., None])
        alpha = torch.exp2(m_i - m_new)
        l_i = l_i * alpha + p.sum(-1)
        acc = acc * alpha[..., None]
        if pv == "fp8":
            acc = acc + (_e4m3(p * FP8_MAX) @ v8[:, :, cols]) * (v_amax[:, :, blk] / FP8_MAX / FP8_MAX)[:, :, None, :]
        else:
            acc = acc + p.to(v.dtype).float() @ vp[:, :, cols].to(v.dtype).float()
        m_i = m_new
    return (acc / l_i[..., None]).transpose(1, 2).to(q.dtype)


# ---- custom op (torch.compile sees one opaque node with a known output) -------------------------


@torch.library.custom_op("flexy::fp8_attention", mutates_args=())
def fp8_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """(B, S, H, D) -> (B, S, H, D) contiguous; scale <= 0 means 1/sqrt(D); mode a key of MODES."""
    qk, pv = MODES[mode]
    with torch.cuda.device(query.device) if query.is_cuda else _nullcontext():
        return fp8_attention(query, key, value, scale if scale > 0 else None, qk=qk, pv=pv)


@fp8_attention_op.register_fake
def _fp8_attention_fake(query, key, value, scale, mode):
    return query.new_empty(query.shape)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ---- routing diffusers' processors through it ---------------------------------------------------

_ALLOW_CPU = {"value": False}  # tests under Triton's interpreter run the kernel on CPU tensors
_ORIGINAL_DISPATCH: dict[str, Any] = {}


def supported(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, enable_gqa=False) -> bool:
    """Whether the kernel takes this call (everything here is static under torch.compile)."""
    if attn_mask is not None or dropout_p or is_causal or enable_gqa:
        return False
    if query.dim() != 4 or key.shape != query.shape or value.shape != query.shape:
        return False
    if query.shape[-1] not in HEAD_DIMS or query.dtype not in (torch.bfloat16, torch.float16):
        return False
    if key.dtype != query.dtype or value.dtype != query.dtype:
        return False
    return query.is_cuda or _ALLOW_CPU["value"]


def _dispatch_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False, attention_kwargs=None, *, backend=None, parallel_config=None):  # fmt: skip
    """Stands in for diffusers' dispatch_attention_fn in the modules whose processors we route:
    processors tagged by install() go to the FP8 kernel where it applies, everything else (and
    every unsupported call) to diffusers' own dispatcher with the default backend."""
    original = _ORIGINAL_DISPATCH["fn"]
    if isinstance(backend, str) and backend in _TAG_TO_MODE:
        mode = _TAG_TO_MODE[backend]
        if parallel_config is None and supported(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa):
            if mode == CUDNN_MODE:
                from .cudnn_attention import cudnn_fp8_attention

                return cudnn_fp8_attention(query, key, value, scale)
            return torch.ops.flexy.fp8_attention(query, key, value, float(scale or 0.0), mode)
        backend = None
    return original(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, attention_kwargs,
                    backend=backend, parallel_config=parallel_config)  # fmt: skip


def _patch_module(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    current = getattr(module, "dispatch_attention_fn", None) if module is not None else None
    if current is None:
        return False
    if current is not _dispatch_attention:
        _ORIGINAL_DISPATCH.setdefault("fn", current)
        module.dispatch_attention_fn = _dispatch_attention
    return True


def _processors(denoiser: nn.Module):
    seen: set[int] = set()
    for module in denoiser.modules():
        proc = getattr(module, "processor", None)
        if proc is None or id(proc) in seen or not hasattr(proc, "_attention_backend"):
            continue
        seen.add(id(proc))
        yield proc


def install(denoiser: nn.Module, mode: str = "fp8") -> int:
    """Route the denoiser's attention processors that call diffusers' dispatch_attention_fn through
    the kernel (mode 'fp8': e4m3 Q·Kᵀ and P·V; 'fp8qk': e4m3 Q·Kᵀ, bf16 P·V; 'int8'/'int8qk': the
    same with int8 Q·Kᵀ; 'cudnn-fp8': cuDNN's FP8 kernel, see cudnn_attention). Returns how many processors now use it; processors of other kinds (SD3's,
    the UNet's) are left as they are."""
    if mode not in _BACKEND_TAGS:
        raise ValueError(f"fp8 attention mode {mode!r}: expected one of {', '.join(_BACKEND_TAGS)}")
    tag = _BACKEND_TAGS[mode]
    routed = 0
    for proc in _processors(denoiser):
        if not _patch_module(type(proc).__module__):
            continue
        if "_flexy_previous_backend" not in proc.__dict__:
            proc._flexy_previous_backend = proc.__dict__.get("_attention_backend", _UNSET)
        proc._attention_backend = tag
        routed += 1
    denoiser._flexy_fp8_attention = mode if routed else None
    return routed


_UNSET = object()


def uninstall(denoiser: nn.Module) -> int:
    """Give the processors back their previous attention backend."""
    restored = 0
    for proc in _processors(denoiser):
        if "_flexy_previous_backend" not in proc.__dict__:
            continue
        previous = proc.__dict__.pop("_flexy_previous_backend")
        if previous is _UNSET:
            proc.__dict__.pop("_attention_backend", None)
        else:
            proc._attention_backend = previous
        restored += 1
    if hasattr(denoiser, "_flexy_fp8_attention"):
        denoiser._flexy_fp8_attention = None
    return restored


def installed_mode(denoiser: nn.Module) -> str | None:
    return getattr(denoiser, "_flexy_fp8_attention", None)


def self_test(device: torch.device | str, mode: str = "fp8", seq: int = 640, heads: int = 2, dim: int = 128,
              max_rel_err: float = 0.1) -> dict[str, Any]:  # fmt: skip
    """Run the kernel once on device against PyTorch's attention (fp32). Tries the TMA loader, then
    plain loads, and makes the first that works the process default. Returns {'ok', 'loader',
    'rel_err', 'error'}: a kernel that fails to build or is wrong is never installed."""
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, seq, heads, dim, generator=g).to(device, torch.bfloat16) for _ in range(3))
    k = k + 0.5 * torch.randn(1, 1, heads, dim, generator=g).to(device, torch.bfloat16)  # a channel offset to smooth
    ref = torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    errors = []
    candidates = ["tma", "ptr"] if default_loader(device) == "tma" else ["ptr"]
    for loader in candidates:
        try:
            out = fp8_attention(q, k, v, qk=MODES[mode][0], pv=MODES[mode][1], loader=loader)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            err = float((out.float() - ref).norm() / ref.norm())
            if not math.isfinite(err) or err > max_rel_err:
                errors.append(f"{loader}: relative error {err:.4f}")
                continue
            set_default_loader(loader)
            return {"ok": True, "loader": loader, "rel_err": round(err, 5), "error": "; ".join(errors) or None}
        except Exception as exc:  # a compile or launch failure: try the next loader
            errors.append(f"{loader}: {exc!r}"[:300])
    return {"ok": False, "loader": None, "rel_err": None, "error": "; ".join(errors)}
