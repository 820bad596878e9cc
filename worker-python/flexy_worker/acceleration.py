"""Per-engine fast paths for the denoiser, switched on by deployment configuration.

A fast path changes how an already loaded pipeline computes, never what it loads:

* ``compile``: regional ``torch.compile`` of the repeated transformer blocks (each block class is
  compiled once and reused by every instance), instead of the whole model: the same speed at a
  fraction of the compile time. Compiled code is cached on disk (``FLEXY_COMPILE_CACHE``), so a
  restarted worker pays tracing only.
* ``fp8=torchao``: the same layers quantized by torchao's float8 row-wise inference recipe instead of
  our FP8Linear (the library's layer, for comparison; both run ``torch._scaled_mm``).
* ``fp8`` (``fp8=row`` by default, ``fp8=tensor``): the Linear layers of the repeated blocks keep
  their weights in float8 e4m3 with one scale per output row (or per tensor), and quantize their
  input on the fly with one scale per token; the product runs on the FP8 tensor cores through
  ``torch._scaled_mm`` and comes out in bfloat16. Halves the weights' memory against bf16.
  Only on cards with FP8 tensor cores (compute capability 8.9 or later: Ada, Hopper, Blackwell);
  elsewhere the option is ignored with a log line. bitsandbytes NF4 layers are dequantized first.
* ``accum=fast`` (with ``fp8``): ``torch._scaled_mm(..., use_fast_accum=True)``: Hopper's FP8 tensor
  cores accumulate without the periodic promotion to full fp32 (faster GEMMs, slightly more error).
  ``accum=exact`` (the default) keeps the promotion.
* ``bias=fused`` (with ``fp8``): the Linear bias goes into ``torch._scaled_mm``'s epilogue instead of a
  separate add (bf16/fp16 bias and output only, as torch requires); checked once per device on a
  small product and left as a separate add where the library refuses it. ``bias=add`` is the default.
* ``sdpa=cudnn|flash|efficient``: the backend PyTorch's scaled-dot-product attention tries first
  (process-wide: the worker owns its GPU and runs one job at a time).
* ``attn=cudnn-fp8``: attention through cuDNN's own FP8 flash-attention kernel (``cudnn_attention``:
  the cuDNN frontend package, per-tensor e4m3 Q, K, V and O), FLUX.2 and FLUX.1 processors, Hopper
  and Blackwell; checked on the device before use, else cuDNN's bf16 attention stays.
* ``attn=fp8|int8|fp8qk|int8qk``: attention through the Triton kernel of ``fp8_attention``: Q·Kᵀ on
  the 8-bit tensor cores (e4m3 for ``fp8*``, int8 for ``int8*``; K smoothed by its mean, per-block
  scales), P·V in e4m3 (``fp8``, ``int8``) or bf16 (``…qk``). FLUX.2 and FLUX.1 processors only
  (those that call diffusers' ``dispatch_attention_fn``); calls it does not take (a mask, another
  head size) use the normal path. CUDA cards with FP8 only; checked on the device before use.
  (``attn=cudnn`` etc. still mean ``sdpa=``.)
* ``cache=THRESHOLD``: First-Block-Cache: when the first block's residual changed by less than
  THRESHOLD (relative mean absolute difference) since the last fully computed step, the other
  blocks are skipped and the residual they added then is reused. Changes the image; off unless
  named. DiT denoisers only (FLUX.2, FLUX.1, SD3).

Configuration, one entry per engine (``*`` for every engine not named)::

    FLEXY_FAST_PATH="flux2_dev_4bit:fp8+compile+sdpa=cudnn,flux1_dev:compile,sd3_medium:compile"
    FLEXY_FAST_PATH="*:fast"        # fast = fp8 + accum=fast + compile + sdpa=cudnn where FP8 exists, else compile
    FLEXY_FAST_PATH="flux2_dev_4bit:fp8+accum=fast+attn=int8+compile+sdpa=cudnn"

The worker applies the engine's fast path once after loading (``apply_fast_path``), then runs a
short warm-up (``warm_up``) so compilation happens before it reports ready, not in the first job.
Applying another path to the same denoiser later (benchmarks) drops the compiled code and switches
the GEMM and attention options to the new path's values.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

FAST_PATH_ENV = "FLEXY_FAST_PATH"
COMPILE_CACHE_ENV = "FLEXY_COMPILE_CACHE"
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_SCALE_FLOOR = 1e-12

# Block classes compiled and quantized, for models that do not list their own _repeated_blocks.
REPEATED_BLOCKS_FALLBACK: dict[str, tuple[str, ...]] = {
    "SD3Transformer2DModel": ("JointTransformerBlock",),
    "UNet2DConditionModel": ("BasicTransformerBlock",),
}
# Compiled in addition to a model's own list: a UNet spends much of its step in its ResNet blocks.
EXTRA_COMPILED_BLOCKS: dict[str, tuple[str, ...]] = {"UNet2DConditionModel": ("ResnetBlock2D",)}


# ---- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastPath:
    compile: bool = False
    fp8: str | None = None  # None | "row" | "tensor"
    sdpa: str | None = None  # None | "cudnn" | "flash" | "efficient" | "math"
    step_cache: float | None = None  # First-Block-Cache threshold
    compile_mode: str | None = None  # torch.compile mode (None: default)
    fast: bool = False  # the "fast" preset, resolved against the device in resolve()
    fast_accum: bool | None = None  # FP8 GEMMs with use_fast_accum (accum=fast); None: the preset decides
    bias_fused: bool = False  # FP8 GEMMs add the bias in their epilogue (bias=fused)
    attention: str | None = None  # None | a mode of fp8_attention.MODES (attn=fp8 ...)

    def enabled(self) -> bool:
        return bool(self.compile or self.fp8 or self.sdpa or self.step_cache or self.fast or self.attention)

    def describe(self) -> str:
        parts = []
        if self.fp8:
            parts.append("fp8" if self.fp8 == "row" else f"fp8={self.fp8}")
        if self.fast_accum:
            parts.append("accum=fast")
        if self.bias_fused:
            parts.append("bias=fused")
        if self.attention:
            parts.append(f"attn={self.attention}")
        if self.compile:
            parts.append("compile" if not self.compile_mode else f"compile={self.compile_mode}")
        if self.sdpa:
            parts.append(f"sdpa={self.sdpa}")
        if self.step_cache:
            parts.append(f"cache={self.step_cache:g}")
        if self.fast:
            parts.append("fast")
        return "+".join(parts) or "off"

    def without_fp8(self) -> FastPath:
        """The same path with FP8 weights and their GEMM options off."""
        return replace(self, fp8=None, fast_accum=None, bias_fused=False)

    def resolve(self, device: torch.device | str | None) -> FastPath:
        """The options that apply on device: 'fast' expands, fp8 drops where the card has none."""
        path = self
        if path.fast:
            fp8 = fp8_supported(device)
            # Fast accumulation measured 7 % faster on the FLUX.2 step with no change in its error (H200).
            path = replace(path, fast=False, compile=True, fp8=path.fp8 or ("row" if fp8 else None),
                           fast_accum=path.fast_accum if path.fast_accum is not None else (True if fp8 else None),
                           sdpa=path.sdpa or ("cudnn" if _is_cuda(device) else None))  # fmt: skip
        if path.fp8 and not fp8_supported(device):
            log.warning("fp8 fast path asked for, but %s has no FP8 tensor cores: ignored", device)
            path = replace(path, fp8=None)
        if not path.fp8 and (path.fast_accum is not None or path.bias_fused):
            path = replace(path, fast_accum=None, bias_fused=False)  # options of the FP8 GEMMs only
        if path.attention and not attention_available(device, path.attention):
            log.warning("attn=%s asked for, but %s cannot run it (no FP8 tensor cores, no Triton or no cuDNN "
                        "frontend): ignored", path.attention, device)  # fmt: skip
            path = replace(path, attention=None)
        if path.sdpa and not _is_cuda(device):
            path = replace(path, sdpa=None)
        return path


SDPA_CHOICES = ("cudnn", "flash", "efficient", "math")
FP8_CHOICES = ("row", "tensor", "torchao")
ATTENTION_CHOICES = ("fp8", "int8", "fp8qk", "int8qk", "cudnn-fp8")  # fp8_attention.MODES, and cuDNN's FP8 kernel


def parse_options(text: str) -> FastPath:
    """'fp8+compile+sdpa=cudnn+cache=0.08' -> FastPath. Raises ValueError on unknown options."""
    values: dict[str, Any] = {}
    for raw in filter(None, (part.strip() for part in text.replace(" ", "").split("+"))):
        name, _, arg = raw.partition("=")
        name = name.lower()
        if name in ("off", "none"):
            continue
        if name == "fast":
            values["fast"] = True
        elif name == "compile":
            values["compile"] = True
            if arg:
                values["compile_mode"] = arg
        elif name == "fp8":
            arg = arg or "row"
            if arg not in FP8_CHOICES:
                raise ValueError(f"fp8={arg}: expected one of {', '.join(FP8_CHOICES)}")
            values["fp8"] = arg
        elif name in ("attn", "attention") and arg in ATTENTION_CHOICES:
            values["attention"] = arg
        elif name in ("sdpa", "attn", "attention"):
            if arg not in SDPA_CHOICES:
                allowed = SDPA_CHOICES + (ATTENTION_CHOICES if name != "sdpa" else ())
                raise ValueError(f"{name}={arg}: expected one of {', '.join(allowed)}")
            values["sdpa"] = arg
        elif name == "accum":
            if arg not in ("fast", "exact"):
                raise ValueError(f"accum={arg}: expected fast or exact")
            values["fast_accum"] = arg == "fast"
        elif name == "bias":
            if arg not in ("fused", "add"):
                raise ValueError(f"bias={arg}: expected fused or add")
            values["bias_fused"] = arg == "fused"
        elif name in ("cache", "fbc", "step_cache"):
            threshold = float(arg) if arg else 0.08
            if not 0 < threshold < 1:
                raise ValueError(f"cache threshold must be in (0, 1), got {threshold}")
            values["step_cache"] = threshold
        else:
            raise ValueError(f"unknown fast-path option {raw!r}")
    return FastPath(**values)


def parse_fast_path(value: str | None) -> dict[str, FastPath]:
    """'engine:opts,engine:opts,*:opts' -> {engine: FastPath}."""
    table: dict[str, FastPath] = {}
    for entry in filter(None, (e.strip() for e in (value or "").split(","))):
        engine, sep, options = entry.partition(":")
        if not sep or not engine.strip():
            raise ValueError(f"{FAST_PATH_ENV} entry {entry!r} is not ENGINE:OPTIONS")
        table[engine.strip()] = parse_options(options)
    return table


def fast_path_for(engine: str, env: dict[str, str] | None = None) -> FastPath:
    """The fast path configured for engine (FastPath() when none: everything off)."""
    table = parse_fast_path((env if env is not None else os.environ).get(FAST_PATH_ENV))
    return table.get(engine) or table.get("*") or FastPath()


# ---- device facts -------------------------------------------------------------------------------


def _is_cuda(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


def fp8_supported(device: torch.device | str | None) -> bool:
    """FP8 tensor cores: compute capability 8.9 (Ada) or later (Hopper 9.0, Blackwell 10.x/12.x)."""
    if not _is_cuda(device):
        return False
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 9)


def attention_available(device: torch.device | str | None, mode: str) -> bool:
    """Whether attn=mode can run here: cuDNN's FP8 kernel needs its frontend and a Hopper or
    Blackwell card; the Triton kernels need FP8 tensor cores and Triton."""
    if mode == "cudnn-fp8":
        from . import cudnn_attention

        return cudnn_attention.available(device)[0]
    return fp8_attention_available(device)


def fp8_attention_available(device: torch.device | str | None) -> bool:
    """The Triton FP8 attention kernel can run here: FP8 tensor cores and Triton."""
    if not fp8_supported(device):
        return False
    from . import fp8_attention

    return fp8_attention.HAS_TRITON


# ---- FP8 linear layers --------------------------------------------------------------------------


def quantize_fp8(weight: torch.Tensor, granularity: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) -> (float8 e4m3 (N, K), float32 scale): (N, 1) per row, or () per tensor.
    weight ≈ q.float() * scale."""
    w = weight.detach().float()
    if granularity == "row":
        amax = w.abs().amax(dim=1, keepdim=True)
    elif granularity == "tensor":
        amax = w.abs().amax()
    else:
        raise ValueError(f"granularity {granularity!r}")
    scale = amax.clamp(min=_SCALE_FLOOR) / FP8_MAX
    q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale.float()


def _quantize_activation(x2d: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x2d.float()
    if granularity == "row":
        amax = xf.abs().amax(dim=1, keepdim=True)
    else:
        amax = xf.abs().amax()
    scale = amax.clamp(min=_SCALE_FLOOR) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def _bias_fusable(bias: torch.Tensor | None, out_dtype: torch.dtype) -> bool:
    """torch._scaled_mm takes a bias only for a bf16/fp16 output, in the output's dtype."""
    return bias is not None and out_dtype in (torch.bfloat16, torch.float16) and bias.dtype == out_dtype


def fp8_linear(
    x: torch.Tensor,
    weight_fp8: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    granularity: str = "row",
    out_dtype: torch.dtype | None = None,
    fast_accum: bool = False,
    bias_fused: bool = False,
) -> torch.Tensor:
    """y = x @ W.T + b with W in FP8 and x quantized per token (row) or per tensor on the fly.
    fast_accum: the tensor cores' fast FP8 accumulation; bias_fused: b added in the GEMM's epilogue
    where torch allows it (else a separate add)."""
    out_dtype = out_dtype or (x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16)
    shape = x.shape
    x2d = x.reshape(-1, shape[-1])
    xq, x_scale = _quantize_activation(x2d, granularity)
    fuse = bias_fused and _bias_fusable(bias, out_dtype)
    if x2d.is_cuda:
        # mat2 must be column-major: the transpose of the row-major (N, K) weight is.
        scale_b = weight_scale.reshape(1, -1) if granularity == "row" else weight_scale
        out = torch._scaled_mm(xq, weight_fp8.t(), scale_a=x_scale, scale_b=scale_b, bias=bias if fuse else None,
                               out_dtype=out_dtype, use_fast_accum=fast_accum)  # fmt: skip
    else:  # CPU (tests, demo): the same arithmetic, dequantized; the epilogue adds in fp32
        out = (xq.float() * x_scale) @ (weight_fp8.float() * weight_scale.reshape(-1, 1)).t()
        out = (out + bias.float() if fuse else out).to(out_dtype)
    if bias is not None and not fuse:
        out = out + bias.to(out_dtype)
    return out.reshape(*shape[:-1], out.shape[-1])


class FP8Linear(nn.Module):
    """A drop-in for nn.Linear whose weight lives in FP8 (buffers, so the model's dtype stays the
    dtype of its first real parameter)."""

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 granularity: str = "row"):  # fmt: skip
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.granularity = granularity
        self.fast_accum = False  # set_fp8_gemm_options
        self.bias_fused = False
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, granularity: str = "row") -> FP8Linear:
        q, scale = quantize_fp8(weight, granularity)
        return cls(q, scale, bias, granularity)

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_fp8.float() * self.weight_scale.reshape(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight_fp8, self.weight_scale, self.bias, self.granularity,
                          fast_accum=self.fast_accum, bias_fused=self.bias_fused)  # fmt: skip

    def extra_repr(self) -> str:
        extra = "".join([", accum=fast" if self.fast_accum else "", ", bias=fused" if self.bias_fused else ""])
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8={self.granularity}{extra}"


def _dense_weight(module: nn.Module) -> torch.Tensor | None:
    """The full-precision weight of an nn.Linear or a bitsandbytes Linear4bit, else None."""
    if type(module) is nn.Linear:
        return module.weight
    if type(module).__name__ == "Linear4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).to(torch.bfloat16)
    return None


def _fp8_eligible(module: nn.Module) -> bool:
    if type(module) is nn.Linear:
        if type(module.weight) not in (nn.Parameter, torch.Tensor):  # already quantized (torchao's tensor)
            return False
        n, k = module.out_features, module.in_features
    elif type(module).__name__ == "Linear4bit":
        n, k = module.out_features, module.in_features
    else:
        return False
    return n % 16 == 0 and k % 16 == 0


def _torchao_fp8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """An nn.Linear whose weight torchao has quantized to float8 row-wise (its Float8Tensor, with
    dynamic per-token activation scales and fast accumulation, torchao's inference defaults)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    n, k = weight.shape
    layer = nn.Linear(k, n, bias=bias is not None, device=weight.device, dtype=torch.bfloat16)
    layer.weight = nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
    # set_inductor_config=False: torchao would switch on coordinate-descent tuning process-wide, which
    # multiplies compile time and would also change every other engine's compiled kernels.
    quantize_(layer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False))
    return layer


def _stored_bytes(module: nn.Module) -> int:
    """Bytes of a layer's parameters and buffers, counting what tensor subclasses hold inside."""
    total = 0
    for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        inner = [getattr(t, name) for name in getattr(t, "__tensor_flatten__", lambda: ([], None))()[0]]
        total += sum(x.numel() * x.element_size() for x in inner) if inner else t.numel() * t.element_size()
    return total


def convert_to_fp8(model: nn.Module, granularity: str = "row", scope: list[nn.Module] | None = None) -> dict[str, int]:
    """Replace the eligible Linear layers inside scope (default: the repeated blocks) by FP8Linear
    (granularity "row" or "tensor": our layer), or by torchao's float8 row-wise layer ("torchao"),
    one layer at a time, so peak memory stays at the model plus one layer."""
    roots = scope if scope is not None else repeated_blocks(model)
    converted, bytes_before, bytes_after = 0, 0, 0
    for root in roots:
        for name, child in list(root.named_modules()):
            for child_name, leaf in list(child.named_children()):
                if not _fp8_eligible(leaf):
                    continue
                weight = _dense_weight(leaf)
                bias = getattr(leaf, "bias", None)
                bytes_before += sum(t.numel() * t.element_size() for t in leaf.parameters())
                if granularity == "torchao":
                    replacement = _torchao_fp8_linear(weight, bias)
                else:
                    replacement = FP8Linear.from_weight(weight, bias, granularity)
                del weight
                setattr(child, child_name, replacement)
                bytes_after += _stored_bytes(replacement)
                converted += 1
    return {"fp8_layers": converted, "fp8_bytes_before": bytes_before, "fp8_bytes_after": bytes_after}


def set_fp8_gemm_options(model: nn.Module, fast_accum: bool = False, bias_fused: bool = False) -> int:
    """Switch every FP8Linear of model to these GEMM options; returns how many layers. Compiled code
    specializes on them: drop it (torch._dynamo.reset()) before switching on a compiled model."""
    layers = [m for m in model.modules() if isinstance(m, FP8Linear)]
    for layer in layers:
        layer.fast_accum, layer.bias_fused = bool(fast_accum), bool(bias_fused)
    return len(layers)


_BIAS_PROBE: dict[str, Any] = {}


def scaled_mm_bias_supported(device: torch.device | str) -> bool:
    """Whether torch._scaled_mm with row-wise scales adds a bf16 bias correctly on this device
    (cuBLASLt's epilogue or CUTLASS, depending on the library versions). Checked once per device."""
    device = torch.device(device)
    if not fp8_supported(device):
        return False
    key = str(device)
    if key not in _BIAS_PROBE:
        try:
            g = torch.Generator(device="cpu").manual_seed(0)
            x = torch.randn(64, 128, generator=g).to(device, torch.bfloat16)
            w = torch.randn(96, 128, generator=g) / 11
            bias = torch.randn(96, generator=g).to(device, torch.bfloat16)
            wq, ws = quantize_fp8(w.to(device), "row")
            fused = fp8_linear(x, wq, ws, bias, "row", bias_fused=True)
            added = fp8_linear(x, wq, ws, bias, "row", bias_fused=False)
            err = float((fused.float() - added.float()).norm() / added.float().norm())
            _BIAS_PROBE[key] = bool(err < 0.01)
            if not _BIAS_PROBE[key]:
                log.warning("torch._scaled_mm bias epilogue differs from the separate add (%.4f): not used", err)
        except Exception as exc:  # e.g. cuBLASLt without a bias epilogue for row-wise scales
            log.warning("torch._scaled_mm refuses a bias here (%r): bias=fused not used", exc)
            _BIAS_PROBE[key] = False
    return _BIAS_PROBE[key]


# ---- regional compile ---------------------------------------------------------------------------


def repeated_block_classes(model: nn.Module) -> tuple[str, ...]:
    own = getattr(model, "_repeated_blocks", None)
    if own:
        return tuple(own)
    return REPEATED_BLOCKS_FALLBACK.get(type(model).__name__, ())


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    classes = set(repeated_block_classes(model))
    return [m for m in model.modules() if type(m).__name__ in classes]


def uses_bitsandbytes(model: nn.Module) -> bool:
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def compile_repeated_blocks(model: nn.Module, mode: str | None = None, fullgraph: bool | None = None) -> int:
    """torch.compile every repeated block in place; returns how many. Instances of one class share
    the compiled code (parameters are graph inputs), so compile time is per class, not per block."""
    if fullgraph is None:
        fullgraph = not uses_bitsandbytes(model)  # bitsandbytes' Python-side dispatch breaks graphs
    extra = set(EXTRA_COMPILED_BLOCKS.get(type(model).__name__, ()))
    blocks = repeated_blocks(model) + [m for m in model.modules() if type(m).__name__ in extra]
    for block in blocks:
        block.compile(mode=mode, fullgraph=fullgraph, dynamic=False)
    # One entry per image size and batch per block class; a service sees a handful.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return len(blocks)


def configure_compile_cache(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Keep Inductor's and Triton's caches in one persistent folder so a restarted worker reuses
    compiled kernels (FX graph cache and autotune results) and pays Dynamo tracing only."""
    cache_dir = cache_dir or os.environ.get(COMPILE_CACHE_ENV)
    if not cache_dir:
        return None
    cache_dir = os.path.abspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_dir, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(cache_dir, "triton"))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        inductor_config.autotune_local_cache = True
    except Exception:  # older torch: the environment variables still apply
        pass
    return cache_dir


# ---- attention ----------------------------------------------------------------------------------


def set_sdpa_backend(name: str | None) -> list[str]:
    """Make PyTorch's SDPA try this backend first (the others stay enabled as fallbacks for shapes
    it does not take). Process-wide. Returns the priority order now in force."""
    from torch.nn.attention import SDPBackend

    by_name = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    if name is None:
        return [str(b) for b in torch._C._get_sdp_priority_order()]
    first = by_name[name]
    order = [int(first)] + [int(b) for b in torch._C._get_sdp_priority_order() if int(b) != int(first)]
    torch._C._set_sdp_priority_order(order)
    if name == "cudnn":
        torch.backends.cuda.enable_cudnn_sdp(True)
    return [str(SDPBackend(b)) for b in order]


# ---- step cache ---------------------------------------------------------------------------------


class _StepCache:
    """First-Block-Cache state of one denoiser."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.skip = False
        self.reference_residual: torch.Tensor | None = None  # first block's, at the last full step
        self.head_output: torch.Tensor | None = None
        self.tail_residual: torch.Tensor | None = None  # what the other blocks added, last full step
        self.last_timestep: float | None = None
        self.calls = 0
        self.skipped = 0

    def reset(self) -> None:
        self.skip = False
        self.reference_residual = self.head_output = self.tail_residual = None
        self.last_timestep = None


class _HeadBlock:
    """Stands in for the first block while the block list is iterated: calls the (possibly compiled)
    block, then decides eagerly whether the remaining blocks run this step."""

    def __init__(self, block: nn.Module, state: _StepCache):
        self._block, self._state = block, state

    def __getattr__(self, name: str):
        return getattr(self._block, name)

    def __call__(self, *args, **kwargs):
        state = self._state
        hidden_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        output = self._block(*args, **kwargs)
        hidden_out = output[1] if isinstance(output, tuple) else output  # (encoder, image) in all three
        residual = hidden_out - hidden_in
        reference = state.reference_residual
        state.skip = False
        if reference is not None and state.tail_residual is not None and reference.shape == residual.shape:
            change = (residual - reference).abs().mean() / reference.abs().mean().clamp(min=1e-12)
            state.skip = bool(change < state.threshold)
        if not state.skip:
            state.reference_residual = residual
        state.head_output = hidden_out
        return output


class _SkippableBlocks(nn.ModuleList):
    """A block list whose iteration stops after the head block on steps the cache skips."""

    _flexy_state: _StepCache | None = None
    _flexy_head: bool = False

    def __iter__(self):
        state = self._flexy_state
        blocks = iter(self._modules.values())
        if state is None:
            yield from blocks
            return
        if self._flexy_head:
            first = next(blocks, None)
            if first is None:
                return
            yield _HeadBlock(first, state)
        if not state.skip:
            yield from blocks


def _step_cache_lists(denoiser: nn.Module) -> list[nn.ModuleList]:
    lists = [getattr(denoiser, name, None) for name in ("transformer_blocks", "single_transformer_blocks")]
    return [blocks for blocks in lists if isinstance(blocks, nn.ModuleList) and len(blocks)]


def enable_step_cache(denoiser: nn.Module, threshold: float) -> bool:
    """First-Block-Cache for DiT denoisers (FLUX.2, FLUX.1, SD3): every step runs the first block;
    when its residual changed by less than threshold (mean absolute difference over mean absolute
    value) since the last fully computed step, the other blocks are skipped and the residual they
    added then is added again before the output norm. A rising timestep (a new image) resets the
    cache, so nothing leaks from one job into the next. The decision runs eagerly around the
    blocks, so compiled blocks keep their full graphs. Returns False where unsupported (UNets)."""
    lists = _step_cache_lists(denoiser)
    norm_out = getattr(denoiser, "norm_out", None)
    if not lists or not isinstance(norm_out, nn.Module):
        log.warning("no step cache for %s: no transformer block list", type(denoiser).__name__)
        return False
    state = getattr(denoiser, "_flexy_step_cache", None)
    if state is not None:  # already on: a new threshold, a fresh cache
        state.threshold = threshold
        state.reset()
        return True
    state = _StepCache(threshold)
    for index, blocks in enumerate(lists):
        blocks.__class__ = _SkippableBlocks
        blocks._flexy_state = state
        blocks._flexy_head = index == 0

    def before_forward(module, args, kwargs):
        timestep = kwargs.get("timestep")
        if timestep is not None:
            now = float(timestep.flatten()[0])
            if state.last_timestep is not None and now > state.last_timestep:
                state.reset()
            state.last_timestep = now
        state.skip = False
        state.calls += 1

    def before_norm_out(module, args, kwargs):
        hidden = args[0]
        if state.skip:
            state.skipped += 1
            return (hidden + state.tail_residual, *args[1:]), kwargs
        if state.head_output is not None and state.head_output.shape == hidden.shape:
            state.tail_residual = hidden - state.head_output
        return None

    denoiser.register_forward_pre_hook(before_forward, with_kwargs=True)
    norm_out.register_forward_pre_hook(before_norm_out, with_kwargs=True)
    denoiser._flexy_step_cache = state
    return True


def step_cache_stats(pipeline_or_denoiser: Any) -> dict[str, int] | None:
    denoiser = pipeline_or_denoiser if isinstance(pipeline_or_denoiser, nn.Module) else denoiser_of(pipeline_or_denoiser)
    state = getattr(denoiser, "_flexy_step_cache", None)
    return None if state is None else {"calls": state.calls, "skipped": state.skipped}


def reset_step_cache(pipeline: Any) -> None:
    state = getattr(denoiser_of(pipeline), "_flexy_step_cache", None)
    if state is not None:
        state.reset()


# ---- memory: FP8 only where it fits --------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRoom:
    """What the engine being accelerated may occupy: the worker's device budget, less what the other
    engines that must stay resident beside it hold (loaded) or will hold (catalog estimate)."""

    budget_bytes: int
    others_bytes: int = 0
    others: tuple[str, ...] = ()


def fp8_size_change(denoiser: nn.Module, scope: list[nn.Module] | None = None) -> int:
    """Bytes the denoiser's weights grow (positive) or shrink (negative) by when its eligible layers
    become FP8 (one byte a weight, one fp32 scale a row, the bias as it is), counted without
    converting anything. bf16 layers shrink by half; NF4 layers (half a byte a weight plus block
    statistics) grow to about twice their size: the FLUX.2 4-bit engine's 16 GB become 32 GB."""
    from .residency import _held_tensors

    change = 0
    for root in scope if scope is not None else repeated_blocks(denoiser):
        for leaf in root.modules():
            if not _fp8_eligible(leaf):
                continue
            bias = getattr(leaf, "bias", None)
            after = leaf.out_features * leaf.in_features + 4 * leaf.out_features
            after += bias.numel() * bias.element_size() if bias is not None else 0
            # Tensor sizes, not storages: on the device a component's tensors view one flat buffer.
            before = sum(t.numel() * t.element_size() for t, _, _ in _held_tensors([leaf]))
            change += after - before
    return change


def fit_to_memory(path: FastPath, pipeline: Any, room: MemoryRoom | None) -> tuple[FastPath, dict[str, Any]]:
    """path, or path without FP8 where FP8 would make the engine outgrow its room: the fastest mode
    that fits. Only the 4-bit engine can grow (NF4 -> FP8); bf16 engines shrink and always keep FP8.
    Returns the path to apply and what was weighed (GB, for the report)."""
    if room is None or not path.fp8:
        return path, {}
    from .residency import storage_bytes

    engine_bytes = storage_bytes([c for c in getattr(pipeline, "components", {}).values() if isinstance(c, nn.Module)]
                                 or [denoiser_of(pipeline)])  # fmt: skip
    change = fp8_size_change(denoiser_of(pipeline))
    fits = change <= 0 or room.others_bytes + engine_bytes + change <= room.budget_bytes
    weighed = {"memory_budget_gb": round(room.budget_bytes / 1e9, 2), "memory_others_gb": round(room.others_bytes / 1e9, 2),
               "memory_others": list(room.others), "resident_gb_as_loaded": round(engine_bytes / 1e9, 2),
               "resident_gb_with_fp8": round((engine_bytes + change) / 1e9, 2), "fp8_fits": fits}  # fmt: skip
    if fits:
        return path, weighed
    log.warning("fp8 fast path dropped: the engine would grow from %.1f to %.1f GB and, beside %.1f GB of %s, "
                "exceed the %.1f GB budget; keeping its loaded weights", engine_bytes / 1e9, (engine_bytes + change) / 1e9,
                room.others_bytes / 1e9, ", ".join(room.others) or "nothing", room.budget_bytes / 1e9)  # fmt: skip
    return path.without_fp8(), weighed


# ---- putting it together ------------------------------------------------------------------------


def denoiser_of(pipeline: Any) -> nn.Module:
    return getattr(pipeline, "transformer", None) or pipeline.unet


@dataclass
class FastPathReport:
    engine: str
    asked: str
    applied: str
    apply_ms: float = 0.0
    warm_up_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "asked": self.asked, "applied": self.applied,
                "apply_ms": round(self.apply_ms, 1),
                "warm_up_ms": None if self.warm_up_ms is None else round(self.warm_up_ms, 1), **self.details}  # fmt: skip


def apply_fast_path(pipeline: Any, path: FastPath, engine: str = "", device: torch.device | str | None = None,
                    room: MemoryRoom | None = None) -> FastPathReport:  # fmt: skip
    """Apply path to the pipeline's denoiser in place. Call once, after the denoiser is on device.
    With room, FP8 is left out where it would make the engine outgrow it (fit_to_memory)."""
    denoiser = denoiser_of(pipeline)
    device = device if device is not None else next(denoiser.parameters()).device
    resolved, weighed = fit_to_memory(path.resolve(device), pipeline, room)
    report = FastPathReport(engine=engine, asked=path.describe(), applied=resolved.describe(), details=dict(weighed))
    if not resolved.enabled():
        return report
    started = time.perf_counter()
    compiled = [m for m in denoiser.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    if compiled:
        # Applied again (a benchmark switching options): compiled code of the old layers would keep
        # their weights alive and specializes on the old options, so drop it and compile afresh.
        torch._dynamo.reset()
        for module in compiled:
            module._compiled_call_impl = None
    if resolved.fp8:
        report.details.update(convert_to_fp8(denoiser, resolved.fp8))
        bias_fused = resolved.bias_fused and scaled_mm_bias_supported(device)
        set_fp8_gemm_options(denoiser, resolved.fast_accum, bias_fused)
        if resolved.bias_fused and not bias_fused:
            report.details["bias_fused"] = False  # the library refused: separate adds
        if _is_cuda(device):
            torch.cuda.empty_cache()
    if resolved.sdpa:
        report.details["sdpa_order"] = set_sdpa_backend(resolved.sdpa)
    report.details.update(_apply_attention(denoiser, resolved.attention, device))
    if (resolved.attention and not report.details.get("attention")) or report.details.get("bias_fused") is False:
        effective = replace(resolved, attention=report.details.get("attention", resolved.attention),
                            bias_fused=resolved.bias_fused and report.details.get("bias_fused") is not False)  # fmt: skip
        report.applied = effective.describe()
    if resolved.step_cache:
        report.details["step_cache"] = enable_step_cache(denoiser, resolved.step_cache)
    if resolved.compile:
        configure_compile_cache()
        report.details["compiled_blocks"] = compile_repeated_blocks(denoiser, mode=resolved.compile_mode)
    if _is_cuda(device):
        torch.cuda.synchronize(device)
    report.apply_ms = (time.perf_counter() - started) * 1000
    log.info("fast path for %s: %s (asked %s) in %.0f ms", engine or type(denoiser).__name__,
             report.applied, report.asked, report.apply_ms)  # fmt: skip
    return report


def _apply_attention(denoiser: nn.Module, mode: str | None, device: torch.device | str) -> dict[str, Any]:
    """Install (after a check on the device) or remove the Triton attention of fp8_attention."""
    if not mode:
        if getattr(denoiser, "_flexy_fp8_attention", None):
            from . import fp8_attention

            fp8_attention.uninstall(denoiser)
        return {}
    from . import fp8_attention

    if mode == fp8_attention.CUDNN_MODE:
        from . import cudnn_attention

        check = cudnn_attention.self_test(device)
    else:
        check = fp8_attention.self_test(device, mode)
    if not check["ok"]:
        fp8_attention.uninstall(denoiser)
        log.warning("attn=%s not used: the kernel failed its check on %s: %s", mode, device, check["error"])
        return {"attention": None, "attention_error": check["error"]}
    routed = fp8_attention.install(denoiser, mode)
    if not routed:
        log.warning("attn=%s: no processor of %s calls dispatch_attention_fn; not used", mode, type(denoiser).__name__)
    details = {"attention": mode if routed else None, "attention_processors": routed,
               "attention_check_rel_err": check["rel_err"]}  # fmt: skip
    details.update({f"attention_{k}": check[k] for k in ("loader", "cudnn") if check.get(k)})
    return details


def warm_up_kwargs(pipeline: Any, width: int, height: int, steps: int = 2, negative: bool = False,
                   guidance: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Pipeline call arguments that trace the denoiser at the shapes a default request has."""
    kwargs: dict[str, Any] = {"width": width, "height": height, "num_inference_steps": steps, "output_type": "latent"}
    if guidance is not None:
        kwargs["guidance_scale"] = float(guidance)
    if getattr(pipeline, "text_encoder", None) is None and type(pipeline).__name__ == "Flux2Pipeline":
        # Remote text encoder: no local encoder to run, so hand over embeddings of the right shape.
        transformer = pipeline.transformer
        kwargs["prompt_embeds"] = torch.zeros(
            1, getattr(pipeline, "tokenizer_max_length", 512), transformer.config.joint_attention_dim,
            device=transformer.device, dtype=transformer.dtype,
        )  # fmt: skip
    else:
        kwargs["prompt"] = "warm-up"
        if negative:
            kwargs["negative_prompt"] = "warm-up"
    return kwargs


def warm_up(pipeline: Any, width: int, height: int, steps: int = 2, negative: bool = False,
            guidance: float | None = None) -> float:  # fmt: skip
    """Run the pipeline briefly at the default size so compilation happens now; returns ms spent."""
    started = time.perf_counter()
    with torch.inference_mode():
        pipeline(**warm_up_kwargs(pipeline, width, height, steps, negative, guidance))
    reset_step_cache(pipeline)
    device = denoiser_of(pipeline).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000


def accelerate_engine(pipeline: Any, spec: Any, env: dict[str, str] | None = None,
                      device: torch.device | str | None = None, warm: bool = True,
                      room: MemoryRoom | None = None) -> FastPathReport | None:  # fmt: skip
    """The engine manager's one call after loading: the configured fast path of spec.id, applied and
    warmed up at the engine's default size. None when no fast path is configured for it. room: the
    memory the engine may occupy beside the engines that must stay resident (FP8 only if it fits)."""
    path = fast_path_for(spec.id, env)
    if not path.enabled():
        return None
    report = apply_fast_path(pipeline, path, spec.id, device, room)
    if warm and ("compile" in report.applied or "fp8" in report.applied):
        report.warm_up_ms = warm_up(
            pipeline, spec.defaults.width, spec.defaults.height,
            negative=bool(spec.limits.negative_prompt), guidance=spec.defaults.guidance,
        )  # fmt: skip
        log.info("warm-up of %s took %.0f ms", spec.id, report.warm_up_ms)
    return report
