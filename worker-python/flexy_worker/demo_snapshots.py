"""Demo snapshots: tiny random-weight copies of each catalog engine, built locally without the hub.

    python -m flexy_worker.demo_snapshots --out MODELS_DIR [--engine ID ...] [--force]

Each snapshot is laid out like the engine's real hub repository (model_index.json naming the real
classes, one folder per component with config.json and safetensors, tokenizers and scheduler
config), so the worker loads it through exactly the from_pretrained path that real weights take.
Only the sizes differ: hidden sizes, layer counts and VAE channels are tiny, while the VAE's
8x downscale and the transformers' patch sizes stay real, so the catalog's size multiples hold.

FLUX.1 and SD3 get byte-identical T5 and CLIP-L text encoders (same config, same seed), so the
residency manager can recognise them by checksum and keep one copy.

Builds are deterministic: same code and library versions give byte-identical files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER_FILE = "flexyface-demo.json"
DEMO_NOTE = "tiny random weights; images are noise"

# Token ids follow the Mistral tekken layout so the chat template and configs read like the real ones.
MISTRAL_SPECIAL_TOKENS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
]  # fmt: skip

MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}[SYSTEM_PROMPT]"
    "{%- for part in parts -%}{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}"
    "[/SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' -%}[INST]"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- elif part['type'] == 'image' -%}[IMG]{%- endif -%}"
    "{%- endfor -%}[/INST]"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- for part in parts -%}{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}"
    "{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Text the tiny tokenizer vocabularies are built from: prompt-like English, so common words are one token.
TOKENIZER_CORPUS = [
    "a photo of a cat holding a sign that says hello world",
    "portrait of a woman in a red dress, studio lighting, 85mm, shallow depth of field, highly detailed",
    "a futuristic city at night with neon lights and rain, cinematic, wide angle",
    "an astronaut riding a horse on the moon, digital art, sharp focus",
    "a bowl of fruit on a wooden table, soft morning light, still life painting",
    "mountain landscape with a lake and snow, golden hour, realistic, 4k",
    "blurry, low quality, watermark, text, deformed hands, extra fingers",
    "You are an AI that reasons about image descriptions. You give structured responses focusing on "
    "object relationships, object attribution and actions without speculation.",
]


@dataclass
class Snapshot:
    """What one engine's snapshot holds: components to save and the model_index that names them."""

    pipeline_class: str
    components: dict[str, Any]
    # model_index entries that differ from the saved object's own class (the class the pipeline loads).
    class_overrides: dict[str, tuple[str, str]] = field(default_factory=dict)
    # dtype of the saved weights. The real FLUX repos store bf16; SD3 does too here, so its T5 and
    # CLIP-L files stay byte-identical to FLUX.1's. RealVisXL ships fp16 files.
    save_dtype: str = "bfloat16"
    # Weight file variant ("fp16" for RealVisXL's *.fp16.safetensors).
    variant: str | None = None
    index_extras: dict[str, Any] = field(default_factory=dict)
    marker_extras: dict[str, Any] = field(default_factory=dict)


# ---- tokenizers -----------------------------------------------------------------------------------


def _corpus_words(normalizer, pre_tokenizer) -> list[str]:
    """Pre-tokenized corpus words, most frequent first (ties by text), so the order never varies."""
    counts: dict[str, int] = {}
    for text in TOKENIZER_CORPUS:
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalized):
            counts[piece] = counts.get(piece, 0) + 1
    return sorted(counts, key=lambda word: (-counts[word], word))


def _build_bpe(pre_tokenizer, normalizer, special_tokens: list[str], suffix: str = ""):
    """A small byte-level BPE vocabulary: every byte, plus one left-to-right merge chain per corpus
    word. Built by rule rather than by a trainer, because the trainers break ties differently from
    run to run and the snapshots must be byte-identical."""
    from tokenizers import pre_tokenizers

    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for token in special_tokens:
        add(token)
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        add(char)
        if suffix:
            add(char + suffix)
    merges: list[tuple[str, str]] = []
    known_merges: set[tuple[str, str]] = set()
    for word in _corpus_words(normalizer, pre_tokenizer):
        symbols = list(word)
        if suffix:
            symbols[-1] += suffix
        current = symbols[0]
        for symbol in symbols[1:]:
            if (current, symbol) not in known_merges:
                known_merges.add((current, symbol))
                merges.append((current, symbol))
            current += symbol
            add(current)
    return vocab, merges


def build_clip_tokenizer():
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    vocab, merges = _build_bpe(pre_tokenizer, normalizer, specials, suffix="</w>")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer():
    """A Unigram vocabulary like T5's sentencepiece: single characters (poor scores) and whole
    corpus words (good scores), so known words stay one token and anything else still encodes."""
    from tokenizers import normalizers, pre_tokenizers
    from transformers import T5TokenizerFast

    pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    words = _corpus_words(normalizers.Sequence([]), pre_tokenizer)
    characters = sorted({char for word in words for char in word} | set(string.printable.strip()))
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(word, -2.0 - rank / 1000) for rank, word in enumerate(words) if len(word) > 1]
    vocab += [(char, -10.0) for char in characters if char not in {piece for piece, _ in vocab}]
    return T5TokenizerFast(vocab=vocab, extra_ids=100, model_max_length=512)


def build_mistral_processor():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    vocab, merges = _build_bpe(pre_tokenizer, None, MISTRAL_SPECIAL_TOKENS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(MISTRAL_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=131072,
        padding_side="left",
    )
    image_processor = PixtralImageProcessor(
        size={"longest_edge": 64},
        patch_size={"height": 16, "width": 16},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=16,
        spatial_merge_size=2,
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )


# ---- text encoders --------------------------------------------------------------------------------

# Shared by FLUX.1 and SD3 (and sized so SD3's CLIP-L+CLIP-G features fit inside the T5 width).
T5_D_MODEL = 64
CLIP_L_HIDDEN = 32
CLIP_G_HIDDEN = 32
SHARED_T5_SEED = 5
SHARED_CLIP_L_SEED = 7


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def build_t5_encoder(vocab_size: int, seed: int = SHARED_T5_SEED):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=T5_D_MODEL,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    _seeded(seed)
    return T5EncoderModel(config)


def _clip_text_config(vocab_size: int, hidden: int, projection_dim: int, layers: int = 2):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        projection_dim=projection_dim,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def build_clip_l_with_projection(vocab_size: int, seed: int = SHARED_CLIP_L_SEED):
    """CLIP-L as SD3 stores it (with projection). FLUX.1 loads the same files as a CLIPTextModel."""
    from transformers import CLIPTextModelWithProjection

    config = _clip_text_config(vocab_size, CLIP_L_HIDDEN, CLIP_L_HIDDEN)
    _seeded(seed)
    return CLIPTextModelWithProjection(config)


def build_clip(vocab_size: int, hidden: int, seed: int, with_projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = _clip_text_config(vocab_size, hidden, hidden)
    _seeded(seed)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


# ---- VAEs -----------------------------------------------------------------------------------------

# Four blocks keep the real 8x downscale; eight channels keep a 768x768 decode cheap on a CPU.
VAE_BLOCKS = (8, 8, 8, 8)


def build_autoencoder_kl(latent_channels: int, seed: int, **config):
    from diffusers import AutoencoderKL

    _seeded(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=1024,
        **config,
    )


# ---- engines --------------------------------------------------------------------------------------


def snapshot_flux2_dev_4bit() -> Snapshot:
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    processor = build_mistral_processor()
    tokenizer = processor.tokenizer
    text_hidden = 16
    # The pipeline stacks hidden states 10, 20 and 30, so the encoder keeps 30 (tiny) layers.
    text_layers = 30
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": 32,
            "num_hidden_layers": text_layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1000000000.0,
            "sliding_window": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 11,
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 64,
            "patch_size": 16,
            "num_channels": 3,
        },
        image_token_index=10,
        spatial_merge_size=2,
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        multimodal_projector_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=11,
    )
    _seeded(21)
    text_encoder = Mistral3ForConditionalGeneration(config)

    _seeded(22)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,  # 32 latent channels x 2x2 patch, as in the real model
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * text_hidden,
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4),
        rope_theta=2000,
        guidance_embeds=True,
    )
    _seeded(23)
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=4,
        sample_size=1024,
        use_quant_conv=True,
        use_post_quant_conv=True,
        patch_size=(2, 2),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )
    return Snapshot(
        pipeline_class="Flux2Pipeline",
        components={
            "scheduler": scheduler,
            "text_encoder": text_encoder,
            "tokenizer": processor,
            "transformer": transformer,
            "vae": vae,
        },
        marker_extras={
            "quantization": "none (the hub repo stores transformer and text encoder as bitsandbytes NF4)",
        },
    )


def snapshot_flux1_dev() -> Snapshot:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    _seeded(31)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,
        pooled_projection_dim=CLIP_L_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    vae = build_autoencoder_kl(
        16, seed=32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return Snapshot(
        pipeline_class="FluxPipeline",
        components={
            "scheduler": scheduler,
            "text_encoder": build_clip_l_with_projection(len(clip_tokenizer)),
            "text_encoder_2": build_t5_encoder(len(t5_tokenizer)),
            "tokenizer": clip_tokenizer,
            "tokenizer_2": t5_tokenizer,
            "transformer": transformer,
            "vae": vae,
        },
        # FLUX.1 reads CLIP-L as a plain CLIPTextModel; the files are SD3's, projection included.
        class_overrides={
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer_2": ("transformers", "T5TokenizerFast"),
        },
    )


def snapshot_sd3_medium() -> Snapshot:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    _seeded(41)
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,
        caption_projection_dim=32,
        pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        out_channels=16,
        pos_embed_max_size=192,
    )
    vae = build_autoencoder_kl(
        16, seed=42, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False
    )
    return Snapshot(
        pipeline_class="StableDiffusion3Pipeline",
        components={
            "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
            "text_encoder": build_clip_l_with_projection(len(clip_tokenizer)),
            "text_encoder_2": build_clip(len(clip_tokenizer), CLIP_G_HIDDEN, seed=43, with_projection=True),
            "text_encoder_3": build_t5_encoder(len(t5_tokenizer)),
            "tokenizer": clip_tokenizer,
            "tokenizer_2": build_clip_tokenizer(),
            "tokenizer_3": t5_tokenizer,
            "transformer": transformer,
            "vae": vae,
        },
        class_overrides={"tokenizer_3": ("transformers", "T5TokenizerFast")},
    )


def snapshot_realvis_xl() -> Snapshot:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    clip_tokenizer = build_clip_tokenizer()
    text_hidden, text_2_hidden, time_embed_dim = 32, 32, 8
    _seeded(51)
    # SDXL's three levels and text-time conditioning; cross-attention only at the lowest level (SDXL
    # also has it one level up), because attention over 48x48 tokens dominates a CPU step at 768 px.
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        attention_head_dim=(1, 1, 2),
        transformer_layers_per_block=(1, 1, 1),
        use_linear_projection=True,
        cross_attention_dim=text_hidden + text_2_hidden,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_2_hidden,
        norm_num_groups=8,
    )
    vae = build_autoencoder_kl(4, seed=52, scaling_factor=0.13025, force_upcast=False)
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        steps_offset=1,
        use_karras_sigmas=False,
    )
    return Snapshot(
        pipeline_class="StableDiffusionXLPipeline",
        components={
            "scheduler": scheduler,
            "text_encoder": build_clip(len(clip_tokenizer), text_hidden, seed=53, with_projection=False),
            "text_encoder_2": build_clip(len(clip_tokenizer), text_2_hidden, seed=54, with_projection=True),
            "tokenizer": clip_tokenizer,
            "tokenizer_2": build_clip_tokenizer(),
            "unet": unet,
            "vae": vae,
        },
        save_dtype="float16",
        variant="fp16",
        index_extras={"force_zeros_for_empty_prompt": True},
    )


SNAPSHOT_BUILDERS: dict[str, Callable[[], Snapshot]] = {
    "flux2_dev_4bit": snapshot_flux2_dev_4bit,
    "flux1_dev": snapshot_flux1_dev,
    "sd3_medium": snapshot_sd3_medium,
    "realvis_xl": snapshot_realvis_xl,
}


# ---- writing --------------------------------------------------------------------------------------


def _library_of(component: Any) -> str:
    return component.__class__.__module__.split(".")[0]


def _save_component(component: Any, folder: Path, dtype, variant: str | None) -> None:
    import torch

    if isinstance(component, torch.nn.Module):
        component.to(dtype)
        component.save_pretrained(folder, safe_serialization=True, variant=variant)
    else:
        component.save_pretrained(folder)


def content_hash(root: Path, exclude: tuple[str, ...] = (MARKER_FILE,)) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in exclude:
            continue
        digest.update(relative.encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def recorded_files(root: Path) -> list[dict[str, Any]]:
    """path, size and sha256 of every file but the marker: what the worker checks a snapshot against
    before it loads it (the same shape as the models CLI's manifest)."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER_FILE and not p.name.startswith(".")):
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        files.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size, "sha256": digest})
    return files


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_snapshot(engine_id: str, snapshot: Snapshot, target: Path) -> dict[str, Any]:
    import diffusers
    import torch

    dtype = getattr(torch, snapshot.save_dtype)
    model_index: dict[str, Any] = {
        "_class_name": snapshot.pipeline_class,
        "_diffusers_version": diffusers.__version__,
        **snapshot.index_extras,
    }
    for name, component in snapshot.components.items():
        _save_component(component, target / name, dtype, snapshot.variant)
        library, class_name = snapshot.class_overrides.get(
            name, (_library_of(component), component.__class__.__name__)
        )
        model_index[name] = [library, class_name]
    _write_json(target / "model_index.json", model_index)
    marker = {
        "weights": "demo",
        "engine": engine_id,
        "revision": f"demo-{content_hash(target)[:12]}",
        "note": DEMO_NOTE,
        **snapshot.marker_extras,
        "files": recorded_files(target),
    }
    _write_json(target / MARKER_FILE, marker)
    return marker


@contextlib.contextmanager
def staged_folder(target: Path, prefix: str | None = None):
    """A fresh folder beside target to write into. When the block ends well it takes target's place
    in one rename (a reader sees the old folder or the whole new one, never half); when it raises, the
    folder is removed and target is left as it was."""
    staging = Path(tempfile.mkdtemp(prefix=f".{prefix or target.name}-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_snapshot(engine_id: str, local_dir: str, models_dir: Path, force: bool = False) -> dict[str, Any]:
    """Build one snapshot into models_dir/local_dir atomically; an existing demo snapshot is kept
    unless force is set, and a folder holding real weights is never overwritten."""
    target = models_dir / local_dir
    marker_path = target / MARKER_FILE
    if target.exists():
        if not marker_path.exists():
            raise FileExistsError(f"{target} exists and is not a demo snapshot; refusing to overwrite it")
        if not force:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
            if "files" not in marker:  # built before markers listed their files: record them now
                marker["files"] = recorded_files(target)
                staged = marker_path.with_name(f".{MARKER_FILE}.{os.getpid()}")
                _write_json(staged, marker)
                os.replace(staged, marker_path)
            return marker
    models_dir.mkdir(parents=True, exist_ok=True)
    with staged_folder(target) as staging:
        marker = write_snapshot(engine_id, SNAPSHOT_BUILDERS[engine_id](), staging)
    return marker


def build_all(models_dir: Path, engines: list[str] | None = None, force: bool = False, catalog=None) -> dict:
    from .catalog import load_catalog

    catalog = catalog or load_catalog()
    selected = engines or [spec.id for spec in catalog if spec.id in SNAPSHOT_BUILDERS]
    results = {}
    for engine_id in selected:
        if engine_id not in SNAPSHOT_BUILDERS:
            raise KeyError(f"no demo snapshot builder for engine {engine_id!r}")
        results[engine_id] = build_snapshot(engine_id, catalog[engine_id].local_dir, models_dir, force)
    return results


def quiet_libraries() -> None:
    """No hub, no progress bars, no load reports: the builder's own output is the useful part."""
    import logging

    # bitsandbytes warns at import that its optional CPU kernels package is absent; 4-bit is GPU-only here.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexy_worker.demo_snapshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="MODELS_DIR to write the snapshots into")
    parser.add_argument("--engine", action="append", dest="engines", help="engine id (repeatable; default all)")
    parser.add_argument("--force", action="store_true", help="rebuild demo snapshots that already exist")
    args = parser.parse_args(argv)
    quiet_libraries()
    started = time.perf_counter()
    from .catalog import load_catalog

    catalog = load_catalog()
    for engine_id, marker in build_all(args.out, args.engines, args.force, catalog).items():
        print(f"{engine_id}: {args.out / catalog[engine_id].local_dir} {marker['revision']}")
    print(f"built in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
