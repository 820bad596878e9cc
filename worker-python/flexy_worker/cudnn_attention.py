"""FP8 attention through cuDNN's own fused kernel (``sdpa_fp8``), reached with NVIDIA's cuDNN frontend
(the ``nvidia-cudnn-frontend`` package, imported as ``cudnn``): the library's flash attention with
Q·Kᵀ and P·V on the FP8 tensor cores, on Hopper (compute capability 9.0) and Blackwell.

What one call computes, for q, k, v in diffusers' (batch, tokens, heads, head_dim) layout, bf16:

* Q, K and V are quantized to float8 e4m3 with one power-of-two scale per tensor (cuDNN takes one
  descale per tensor; a power of two makes the scale and its inverse exact). The amax reductions and
  the casts are plain PyTorch, so under a regional ``torch.compile`` Inductor fuses them with the
  RoPE and norms that produce q and k.
* cuDNN runs softmax(q·kᵀ·scale)·v with P held in e4m3 (scaled by 256: P ≤ 1) and writes O in e4m3
  (Hopper's kernel has no bf16 output). O is a convex combination of V's rows, so |O| ≤ amax(V): the
  output scale is half V's, which can neither overflow nor lose range.
* O is scaled back to bf16.

The kernel call is the custom op ``flexy::cudnn_fp8_sdpa`` (opaque to torch.compile, one graph per
block); its CPU implementation is the same quantized arithmetic in fp32 PyTorch, so the routing and
the error can be tested without a GPU. One cuDNN graph is built per shape and layout, on first use,
and kept. The package is optional: without it, or on a card without the kernel, ``self_test`` says
why and the fast path keeps cuDNN's bf16 attention.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import torch

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
P_SCALE = 256.0  # P in [0, 1] held as e4m3 P * 256 (a power of two, well inside 448)
HEAD_DIMS = (64, 128)

_GRAPHS: dict[tuple, Any] = {}
_HANDLES: dict[int, Any] = {}
_LOCK = threading.Lock()


def _cudnn():
    import cudnn  # nvidia-cudnn-frontend

    return cudnn


def available(device: torch.device | str | None) -> tuple[bool, str | None]:
    """(True, None) where the frontend imports and the card has cuDNN's FP8 attention, else
    (False, why)."""
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False, "needs a CUDA device"
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    if major not in (9, 10):
        return False, f"cuDNN's FP8 attention needs Hopper or Blackwell (compute capability 9.x/10.x), not {major}.x"
    try:
        _cudnn()
    except Exception as exc:  # not installed, or built for another CUDA
        return False, f"cuDNN frontend not importable: {exc!r}"[:300]
    return True, None


# ---- quantization (traced by torch.compile) -----------------------------------------------------


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (e4m3 x * m, 1/m as a (1, 1, 1, 1) fp32 tensor), m the largest power of two with
    amax(x) * m <= 448."""
    amax = x.detach().abs().amax().float().clamp_min(1e-12)
    multiplier = torch.exp2(torch.floor(torch.log2(FP8_MAX / amax)))
    q = (x.float() * multiplier).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, multiplier.reciprocal().reshape(1, 1, 1, 1)


def cudnn_fp8_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        scale: float | None = None) -> torch.Tensor:  # fmt: skip
    """Attention of (B, S, H, D) bf16/fp16 q, k, v through cuDNN's FP8 kernel; (B, S, H, D) in q's dtype."""
    q8, descale_q = quantize(query)
    k8, descale_k = quantize(key)
    v8, descale_v = quantize(value)
    scale_o = 0.5 / descale_v  # |O| <= amax(V): O * scale_o <= 224
    o8 = torch.ops.flexy.cudnn_fp8_sdpa(q8, k8, v8, descale_q, descale_k, descale_v, scale_o,
                                        float(scale) if scale else 1.0 / math.sqrt(query.shape[-1]))  # fmt: skip
    return (o8.float() * (1.0 / scale_o)).to(query.dtype)


# ---- the custom op ------------------------------------------------------------------------------


def _bhsd(t: torch.Tensor) -> tuple[list[int], list[int]]:
    """cuDNN's (b, h, s, d) dims and strides of a (B, S, H, D) tensor, whatever its strides."""
    b, s, h, d = t.shape
    st = t.stride()
    return [b, h, s, d], [st[0], st[2], st[1], st[3]]


def _handle(device: torch.device) -> Any:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _HANDLES:
        with torch.cuda.device(index):
            _HANDLES[index] = _cudnn().create_handle()
    return _HANDLES[index]


class _Graph:
    """One built cuDNN sdpa_fp8 graph for one shape and layout, with its workspace."""

    def __init__(self, q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, attn_scale: float):
        cudnn = _cudnn()
        device = q8.device
        self.handle = _handle(device)
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(device).cuda_stream)
        e4m3, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=f32, compute_data_type=f32, handle=self.handle)
        self.q, self.k, self.v = (graph.tensor(name=n, dim=_bhsd(t)[0], stride=_bhsd(t)[1], data_type=e4m3)
                                  for n, t in (("q", q8), ("k", k8), ("v", v8)))  # fmt: skip
        scalar = {"dim": [1, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": f32}
        self.dq, self.dk, self.dv, self.ds, self.ss, self.so = (
            graph.tensor(name=n, **scalar) for n in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
        )  # fmt: skip
        kwargs = dict(q=self.q, k=self.k, v=self.v, descale_q=self.dq, descale_k=self.dk, descale_v=self.dv,
                      descale_s=self.ds, scale_s=self.ss, scale_o=self.so, attn_scale=attn_scale,
                      use_causal_mask=False, name="flexy_sdpa_fp8")  # fmt: skip
        try:
            out = graph.sdpa_fp8(**kwargs, generate_stats=False)
        except TypeError:  # frontends before generate_stats: is_inference
            out = graph.sdpa_fp8(**kwargs, is_inference=True)
        self.o, _, self.amax_s, self.amax_o = out
        dims, strides = _bhsd(q8)  # O is written in q's layout
        self.o.set_output(True).set_dim(dims).set_stride(strides).set_data_type(e4m3)
        for amax in (self.amax_s, self.amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(max(1, graph.get_workspace_size()), device=device, dtype=torch.uint8)
        self.p_scale = torch.full((1, 1, 1, 1), P_SCALE, device=device, dtype=torch.float32)
        self.p_descale = torch.full((1, 1, 1, 1), 1.0 / P_SCALE, device=device, dtype=torch.float32)
        self.amax_buffers = (torch.empty(1, 1, 1, 1, device=device), torch.empty(1, 1, 1, 1, device=device))

    def run(self, q8, k8, v8, descale_q, descale_k, descale_v, scale_o, out) -> None:
        cudnn = _cudnn()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(q8.device).cuda_stream)
        pack = {self.q: q8, self.k: k8, self.v: v8, self.dq: descale_q, self.dk: descale_k, self.dv: descale_v,
                self.ds: self.p_descale, self.ss: self.p_scale, self.so: scale_o, self.o: out,
                self.amax_s: self.amax_buffers[0], self.amax_o: self.amax_buffers[1]}  # fmt: skip
        self.graph.execute(pack, self.workspace, handle=self.handle)


def _graph_for(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, attn_scale: float) -> _Graph:
    key = (q8.device, tuple(q8.shape), q8.stride(), k8.stride(), v8.stride(), float(attn_scale))
    graph = _GRAPHS.get(key)
    if graph is None:
        with _LOCK:
            graph = _GRAPHS.get(key)
            if graph is None:
                graph = _GRAPHS[key] = _Graph(q8, k8, v8, attn_scale)
    return graph


@torch.library.custom_op("flexy::cudnn_fp8_sdpa", mutates_args=())
def cudnn_fp8_sdpa(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor,
                   attn_scale: float) -> torch.Tensor:  # fmt: skip
    """e4m3 (B, S, H, D) q, k, v with their descales -> e4m3 O * scale_o, (B, S, H, D) contiguous."""
    q8, k8, v8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8, v8))
    if not q8.is_cuda:
        return reference_from_quantized(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, attn_scale)
    out = torch.empty(q8.shape, device=q8.device, dtype=FP8)
    with torch.cuda.device(q8.device):
        _graph_for(q8, k8, v8, attn_scale).run(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, out)
    return out


@cudnn_fp8_sdpa.register_fake
def _cudnn_fp8_sdpa_fake(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, attn_scale):
    return q8.new_empty(q8.shape)


def reference_from_quantized(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, attn_scale) -> torch.Tensor:
    """What cuDNN's sdpa_fp8 computes, in fp32 PyTorch (the CPU implementation of the op, and the
    tests' reference): scores from the dequantized e4m3 inputs, P rounded to e4m3 at P_SCALE, P·V,
    O rounded to e4m3 at scale_o."""
    qf, kf, vf = (t.float().transpose(1, 2) * d.reshape(()) for t, d in ((q8, descale_q), (k8, descale_k), (v8, descale_v)))
    scores = (qf @ kf.transpose(-1, -2)) * attn_scale
    p = torch.softmax(scores, dim=-1)
    row_sum = p.sum(-1, keepdim=True)
    p8 = (p * P_SCALE).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() / P_SCALE
    o = (p8 @ vf) / row_sum
    return (o * scale_o.reshape(())).clamp(-FP8_MAX, FP8_MAX).to(FP8).transpose(1, 2).contiguous()


def supported(query: torch.Tensor) -> bool:
    """Shapes the kernel takes (the dispatcher has already ruled out masks, dropout and cross-attention)."""
    return query.dim() == 4 and query.shape[-1] in HEAD_DIMS and query.dtype in (torch.bfloat16, torch.float16)


def self_test(device: torch.device | str, seq: int = 1024, heads: int = 2, dim: int = 128,
              max_rel_err: float = 0.1) -> dict[str, Any]:  # fmt: skip
    """Build and run the kernel once on device against fp32 attention. Returns {'ok', 'rel_err',
    'error', 'cudnn'}: a kernel that fails to build or is wrong is never installed."""
    device = torch.device(device)
    ok, why = available(device)
    if not ok:
        return {"ok": False, "rel_err": None, "error": why, "cudnn": None}
    try:
        cudnn = _cudnn()
        version = f"frontend {getattr(cudnn, '__version__', '?')}, backend {cudnn.backend_version_string()}"
    except Exception:
        version = None
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(1, seq, heads, dim, generator=g).to(device, torch.bfloat16) for _ in range(3))
        ref = torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        out = cudnn_fp8_attention(q, k, v)
        torch.cuda.synchronize(device)
        err = float((out.float() - ref).norm() / ref.norm())
        if not math.isfinite(err) or err > max_rel_err:
            return {"ok": False, "rel_err": err, "error": f"relative error {err:.4f}", "cudnn": version}
        return {"ok": True, "rel_err": round(err, 5), "error": None, "cudnn": version}
    except Exception as exc:  # the frontend refused the graph, or no engine supports it here
        return {"ok": False, "rel_err": None, "error": repr(exc)[:400], "cudnn": version}
