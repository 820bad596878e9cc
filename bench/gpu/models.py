"""Real-size random-weight models of the catalog's engines, built on the device.

Each component is constructed from the real architecture config in bench/gpu/configs/ with its
parameters on the meta device (buffers real), then materialized one layer at a time on the device
with seeded random values (Linear and Conv weights normal with the variance of PyTorch's default
uniform(±1/sqrt(fan_in)) init, biases that uniform; ones and zeros for norms; N(0, 1) for
embeddings). A layer can be converted as it is
materialized (bitsandbytes NF4, FP8), so a 32 B-parameter transformer never needs its bf16 size on
the card. Values depend only on (seed, parameter name): a model built twice, in any format, starts
from the same bf16 weights.

Random weights cost what the real ones cost: the same shapes, dtypes, kernels and bytes.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Small stand-ins for CPU smoke runs of the bench itself (--tiny): same classes, tiny sizes.
TINY: dict[str, dict[str, Any]] = {
    "flux2_dev_transformer": dict(num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
                                  joint_attention_dim=192, axes_dims_rope=[8, 8, 8, 8]),
    "flux1_dev_transformer": dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                  joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6]),
    "sd3_medium_transformer": dict(num_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64,
                                   caption_projection_dim=32, pooled_projection_dim=64),
    "sdxl_unet": dict(block_out_channels=[32, 64, 64], transformer_layers_per_block=[1, 1, 1], attention_head_dim=[2, 4, 4],
                      cross_attention_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                      norm_num_groups=8, layers_per_block=1),
    "flux2_dev_vae": dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_num_groups=4),
    "flux1_dev_vae": dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_num_groups=4),
    "sd3_medium_vae": dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_num_groups=4),
    "sdxl_vae": dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_num_groups=4),
    "clip_l": dict(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2, num_attention_heads=2),
    "clip_g": dict(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2, num_attention_heads=2),
    "t5_xxl": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    "mistral_small_3_1_24b": dict(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=30, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
                           image_size=64, patch_size=16),
    ),
}  # fmt: skip


def load_config(name: str, tiny: bool = False) -> dict[str, Any]:
    doc = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    if tiny and name in TINY:
        config = doc["config"]
        for key, value in TINY[name].items():
            if isinstance(value, dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    return doc


# ---- construction -------------------------------------------------------------------------------


def construct_empty(doc: dict[str, Any]) -> nn.Module:
    """The module of a config doc with parameters on the meta device and buffers real (CPU)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if doc["library"] == "diffusers":
            import diffusers

            model = getattr(diffusers, doc["class"]).from_config(doc["config"])
        else:
            import transformers

            config = getattr(transformers, doc["config_class"])(**doc["config"])
            model = getattr(transformers, doc["class"])(config)
    return model.eval().requires_grad_(False)


def _generator(device: torch.device, seed: int, name: str) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62))
    return g


def _fill(module: nn.Module, qualname: str, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Materialize module's own meta parameters (not its children's) with seeded values."""
    fan_in = None
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        fan_in = module.weight.numel() // module.weight.shape[0]
    for pname, param in list(module._parameters.items()):
        if param is None or param.device.type != "meta":
            continue
        full = f"{qualname}.{pname}" if qualname else pname
        target_dtype = dtype if param.is_floating_point() else param.dtype
        t = torch.empty(param.shape, dtype=target_dtype, device=device)
        g = _generator(device, seed, full)
        if fan_in is not None and pname == "weight":
            # Normal with the variance of PyTorch's default uniform(±1/sqrt(fan_in)): trained weights
            # are closer to normal than uniform, which matters for the quantization errors measured.
            t.normal_(0.0, 1 / math.sqrt(3 * max(1, fan_in)), generator=g)
        elif fan_in is not None:
            bound = 1 / math.sqrt(max(1, fan_in))
            t.uniform_(-bound, bound, generator=g)
        elif isinstance(module, nn.Embedding):
            t.normal_(0.0, 1.0, generator=g)
        elif pname == "bias" or pname.endswith("_bias"):
            t.zero_()
        elif t.ndim == 1:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=g)
        module._parameters[pname] = nn.Parameter(t, requires_grad=False)


def materialize(
    model: nn.Module,
    device: torch.device | str,
    dtype: torch.dtype,
    seed: int,
    convert: Callable[[nn.Linear, str], nn.Module] | None = None,
    keep: Callable[[str], bool] = lambda name: False,
) -> nn.Module:
    """Give every meta parameter seeded values on device; convert(linear, name) replaces each
    nn.Linear right after it is filled (unless keep(name)), one layer at a time."""
    device = torch.device(device)
    # Names only: holding module references here would keep every filled bf16 layer alive.
    linears = [
        (parent_name, child_name)
        for parent_name, parent in model.named_modules()
        for child_name, child in parent.named_children()
        if type(child) is nn.Linear and child.weight.device.type == "meta"
    ]
    for parent_name, child_name in linears:
        parent = model.get_submodule(parent_name) if parent_name else model
        child = getattr(parent, child_name)
        name = f"{parent_name}.{child_name}" if parent_name else child_name
        _fill(child, name, device, dtype, seed)
        if convert is not None and not keep(name):
            setattr(parent, child_name, convert(child, name))
        del child, parent
    for name, module in model.named_modules():
        _fill(module, name, device, dtype, seed)
        for bname, buf in list(module._buffers.items()):
            if buf is None or buf.device.type == device.type:  # made on the device already (FP8 weights): keep
                continue
            if buf.is_floating_point() and "inv_freq" not in bname:
                buf = buf.to(dtype)
            module._buffers[bname] = buf.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model


def build(name: str, device, dtype=torch.bfloat16, seed: int = 0, tiny: bool = False, convert=None, keep=lambda n: False) -> nn.Module:
    return materialize(construct_empty(load_config(name, tiny)), device, dtype, seed, convert, keep)


# ---- conversions applied while materializing ----------------------------------------------------


def nf4_converter(quant: dict[str, Any]) -> Callable[[nn.Linear, str], nn.Module]:
    """bitsandbytes Linear4bit with the settings of a *_bnb4.json config."""
    import bitsandbytes as bnb

    compute_dtype = getattr(torch, quant.get("bnb_4bit_compute_dtype", "bfloat16"))

    def convert(linear: nn.Linear, name: str) -> nn.Module:
        device = linear.weight.device
        q = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None, compute_dtype=compute_dtype,
            compress_statistics=bool(quant.get("bnb_4bit_use_double_quant")), quant_type=quant["bnb_4bit_quant_type"],
            device="meta",
        )  # fmt: skip
        weight = bnb.nn.Params4bit(
            linear.weight.data, requires_grad=False, compress_statistics=bool(quant.get("bnb_4bit_use_double_quant")),
            quant_type=quant["bnb_4bit_quant_type"], blocksize=int(quant.get("bnb_4bit_blocksize", 64)), module=q,
        )  # fmt: skip
        q.weight = weight._quantize(device)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        return q

    return convert


def fp8_converter(granularity: str = "row", scope: Callable[[str], bool] = lambda name: True):
    from flexy_worker.acceleration import FP8Linear

    def convert(linear: nn.Linear, name: str) -> nn.Module:
        if not scope(name) or linear.in_features % 16 or linear.out_features % 16:
            return linear
        return FP8Linear.from_weight(linear.weight, linear.bias, granularity)

    return convert


def in_repeated_blocks(name: str) -> bool:
    """Linear layers inside FLUX/SD3 block lists (what acceleration.convert_to_fp8 converts)."""
    return name.startswith(("transformer_blocks.", "single_transformer_blocks.")) or ".transformer_blocks." in name


def load_quant(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def module_bytes(module: nn.Module) -> int:
    from flexy_worker.residency import _inner_tensors  # torchao's weights are wrappers without storage

    seen = {}
    for held in list(module.parameters()) + list(module.buffers()):
        for t in _inner_tensors(held):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def parameter_count(module: nn.Module) -> int:
    """Parameters as the unquantized model has them (a packed NF4 weight counts its full shape)."""
    total = 0
    for m in module.modules():
        if type(m).__name__ == "Linear4bit":
            total += m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0)
        elif type(m).__name__ == "FP8Linear":
            total += m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0)
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


# ---- pipelines ----------------------------------------------------------------------------------


def _schedulers():
    from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    return {
        "flux2": lambda: FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential"),
        "flux1": lambda: FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096),
        "sd3": lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        "sdxl": lambda: EulerDiscreteScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="epsilon", interpolation_type="linear", timestep_spacing="leading", steps_offset=1,
            use_karras_sigmas=False),
    }  # fmt: skip


def _tokenizers():
    # Tokenizers of the real vocabularies are not reachable offline; the worker's demo builders make
    # small ones. Prompts are padded to the real lengths (77 CLIP, 512/256 T5), so the encoders do the
    # real work; token ids simply come from a smaller vocabulary.
    from flexy_worker.demo_snapshots import build_clip_tokenizer, build_mistral_processor, build_t5_tokenizer

    return build_clip_tokenizer, build_t5_tokenizer, build_mistral_processor


def flux2_transformer(device, weights: str, tiny: bool = False, seed: int = 0) -> nn.Module:
    """weights: 'bf16' | 'nf4' (as diffusers/FLUX.2-dev-bnb-4bit) | 'fp8' (blocks row-wise FP8)."""
    if weights == "bf16":
        return build("flux2_dev_transformer", device, seed=seed, tiny=tiny)
    if weights == "nf4":
        return build("flux2_dev_transformer", device, seed=seed, tiny=tiny,
                     convert=nf4_converter(load_quant("flux2_dev_transformer_bnb4")))  # fmt: skip
    if weights in ("fp8", "fp8-row", "fp8-tensor"):
        gran = "tensor" if weights.endswith("tensor") else "row"
        return build("flux2_dev_transformer", device, seed=seed, tiny=tiny, convert=fp8_converter(gran, in_repeated_blocks))
    raise ValueError(weights)


def build_pipeline(engine: str, device, *, tiny: bool = False, seed: int = 0, flux2_weights: str = "nf4",
                   text_encoder: str = "remote", transformer_convert=None) -> Any:  # fmt: skip
    """The engine's diffusers pipeline with real-size random weights on device (bf16; FLUX.2's
    transformer NF4 unless flux2_weights says otherwise). transformer_convert converts the
    denoiser's Linear layers as they are materialized (FP8 for a 32 GB cap, say)."""
    import diffusers

    device = torch.device(device)
    schedulers = _schedulers()
    clip_tok, t5_tok, mistral_proc = _tokenizers()
    bf16 = torch.bfloat16
    if engine == "flux2_dev_4bit":
        transformer = flux2_transformer(device, flux2_weights, tiny, seed)
        te, tok = None, None
        if text_encoder == "local":
            keep = lambda name: name == "lm_head"  # noqa: E731
            te = build("mistral_small_3_1_24b", device, seed=seed + 1, tiny=tiny, keep=keep,
                       convert=nf4_converter(load_quant("mistral_small_3_1_24b_bnb4")))  # fmt: skip
            tok = mistral_proc()
        return diffusers.Flux2Pipeline(
            scheduler=schedulers["flux2"](), vae=build("flux2_dev_vae", device, seed=seed + 2, tiny=tiny),
            text_encoder=te, tokenizer=tok, transformer=transformer)  # fmt: skip
    if engine == "flux1_dev":
        return diffusers.FluxPipeline(
            scheduler=schedulers["flux1"](), vae=build("flux1_dev_vae", device, seed=seed + 2, tiny=tiny),
            text_encoder=_clip_plain(device, seed + 3, tiny), tokenizer=clip_tok(),
            text_encoder_2=build("t5_xxl", device, seed=seed + 4, tiny=tiny), tokenizer_2=t5_tok(),
            transformer=build("flux1_dev_transformer", device, seed=seed, tiny=tiny, convert=transformer_convert))  # fmt: skip
    if engine == "sd3_medium":
        return diffusers.StableDiffusion3Pipeline(
            scheduler=schedulers["sd3"](), vae=build("sd3_medium_vae", device, seed=seed + 2, tiny=tiny),
            text_encoder=build("clip_l", device, seed=seed + 3, tiny=tiny), tokenizer=clip_tok(),
            text_encoder_2=build("clip_g", device, seed=seed + 5, tiny=tiny), tokenizer_2=clip_tok(),
            text_encoder_3=build("t5_xxl", device, seed=seed + 4, tiny=tiny), tokenizer_3=t5_tok(),
            transformer=build("sd3_medium_transformer", device, seed=seed, tiny=tiny, convert=transformer_convert))  # fmt: skip
    if engine == "realvis_xl":
        return diffusers.StableDiffusionXLPipeline(
            scheduler=schedulers["sdxl"](), vae=build("sdxl_vae", device, seed=seed + 2, tiny=tiny),
            text_encoder=_clip_plain(device, seed + 3, tiny), tokenizer=clip_tok(),
            text_encoder_2=build("clip_g", device, seed=seed + 5, tiny=tiny), tokenizer_2=clip_tok(),
            unet=build("sdxl_unet", device, seed=seed, tiny=tiny, convert=transformer_convert))  # fmt: skip
    raise ValueError(engine)


def _clip_plain(device, seed, tiny):
    """CLIP-L as FLUX.1 and SDXL read it: CLIPTextModel (no projection)."""
    doc = load_config("clip_l", tiny)
    doc["class"] = "CLIPTextModel"
    return materialize(construct_empty(doc), device, torch.bfloat16, seed)


def remote_prompt_embeds(pipeline: Any, batch: int = 1, seed: int = 0, device="cpu") -> torch.Tensor:
    """Prompt embeddings of the shape the remote FLUX.2 text encoder returns: (B, 512, 15360) bf16."""
    g = torch.Generator().manual_seed(seed)
    width = pipeline.transformer.config.joint_attention_dim
    return torch.randn(batch, 512, width, generator=g).to(torch.bfloat16).to(device)
