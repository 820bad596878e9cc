"""The demo snapshot builder: hub-like layout, real classes, byte-identical rebuilds, offline loading."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import os

import diffusers
import pytest
import torch
import transformers

from flexy_worker import demo_snapshots
from flexy_worker.demo_snapshots import MARKER_FILE, build_all, content_hash
from flexy_worker.residency import content_key

ENGINES = ["flux2_dev_4bit", "flux1_dev", "sd3_medium", "realvis_xl"]

REAL_CLASSES = {
    "flux2_dev_4bit": {
        "_class_name": "Flux2Pipeline",
        "transformer": "Flux2Transformer2DModel",
        "vae": "AutoencoderKLFlux2",
        "text_encoder": "Mistral3ForConditionalGeneration",
        "tokenizer": "PixtralProcessor",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "flux1_dev": {
        "_class_name": "FluxPipeline",
        "transformer": "FluxTransformer2DModel",
        "vae": "AutoencoderKL",
        "text_encoder": "CLIPTextModel",
        "text_encoder_2": "T5EncoderModel",
        "tokenizer": "CLIPTokenizer",
        "tokenizer_2": "T5TokenizerFast",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "sd3_medium": {
        "_class_name": "StableDiffusion3Pipeline",
        "transformer": "SD3Transformer2DModel",
        "vae": "AutoencoderKL",
        "text_encoder": "CLIPTextModelWithProjection",
        "text_encoder_2": "CLIPTextModelWithProjection",
        "text_encoder_3": "T5EncoderModel",
        "tokenizer": "CLIPTokenizer",
        "tokenizer_2": "CLIPTokenizer",
        "tokenizer_3": "T5TokenizerFast",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "realvis_xl": {
        "_class_name": "StableDiffusionXLPipeline",
        "unet": "UNet2DConditionModel",
        "vae": "AutoencoderKL",
        "text_encoder": "CLIPTextModel",
        "text_encoder_2": "CLIPTextModelWithProjection",
        "tokenizer": "CLIPTokenizer",
        "tokenizer_2": "CLIPTokenizer",
        "scheduler": "EulerDiscreteScheduler",
    },
}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("engine", ENGINES)
def test_layout_matches_model_index(demo_models_dir, catalog, engine):
    root = demo_models_dir / catalog[engine].local_dir
    index = json.loads((root / "model_index.json").read_text())
    named = {key: value[1] if isinstance(value, list) else value for key, value in index.items() if key != "_diffusers_version"}
    named = {key: value for key, value in named.items() if key in REAL_CLASSES[engine]}
    assert named == REAL_CLASSES[engine]

    components = [key for key, value in index.items() if isinstance(value, list)]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(components)
    variant = ".fp16" if engine == "realvis_xl" else ""
    for name in components:
        folder = root / name
        if name.startswith(("transformer", "unet", "vae", "text_encoder")):
            assert (folder / "config.json").exists()
            weights = [p.name for p in folder.glob("*.safetensors")]
            expected = "model" if name.startswith("text_encoder") else "diffusion_pytorch_model"
            assert weights == [f"{expected}{variant}.safetensors"]
        elif name.startswith("tokenizer"):
            assert (folder / "tokenizer.json").exists() and (folder / "tokenizer_config.json").exists()
        elif name == "scheduler":
            assert (folder / "scheduler_config.json").exists()

    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["weights"] == "demo" and marker["engine"] == engine
    assert marker["note"] == "tiny random weights; images are noise"
    assert marker["revision"] == f"demo-{content_hash(root)[:12]}"


def test_every_file_matches_the_catalog_allow_list(demo_models_dir, catalog):
    """The models CLI downloads only the catalog's allowPatterns, so a demo snapshot must not need
    any file outside them either."""
    engines = json.loads(catalog.source.read_text())["engines"]
    for engine, spec in engines.items():
        root = demo_models_dir / spec["localDir"]
        for path in root.rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and relative != MARKER_FILE:
                assert any(fnmatch.fnmatchcase(relative, pattern) for pattern in spec["allowPatterns"]), (engine, relative)


def test_flux2_processor_has_a_chat_template_and_mistral_tokens(demo_models_dir):
    processor = transformers.AutoProcessor.from_pretrained(demo_models_dir / "flux2_dev_4bit" / "tokenizer")
    assert type(processor).__name__ == "PixtralProcessor"
    messages = [[
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "a red cube"}]},
    ]]  # fmt: skip
    text = processor.apply_chat_template(messages, tokenize=False)[0]
    assert text == "<s>[SYSTEM_PROMPT]be brief[/SYSTEM_PROMPT][INST]a red cube[/INST]"
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [1, 17]  # <s>, [SYSTEM_PROMPT] at their tekken ids
    assert processor.tokenizer.unk_token_id not in ids


@pytest.mark.parametrize("engine", ENGINES)
def test_size_multiple_follows_from_vae_and_patch(demo_models_dir, catalog, engine):
    root = demo_models_dir / engine
    vae = json.loads((root / "vae" / "config.json").read_text())
    vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
    if engine == "realvis_xl":
        patch = 1
    elif engine == "sd3_medium":
        patch = json.loads((root / "transformer" / "config.json").read_text())["patch_size"]
    else:  # FLUX packs 2x2 latent patches into each token
        patch = 2
    assert vae_factor == 8
    assert vae_factor * patch == catalog[engine].limits.size_multiple


def test_flux1_and_sd3_share_identical_t5_and_clip_l(demo_models_dir):
    flux, sd3 = demo_models_dir / "flux1_dev", demo_models_dir / "sd3_medium"
    for flux_name, sd3_name in (("text_encoder_2", "text_encoder_3"), ("text_encoder", "text_encoder")):
        assert _sha256(flux / flux_name / "model.safetensors") == _sha256(sd3 / sd3_name / "model.safetensors")
        assert (flux / flux_name / "config.json").read_bytes() == (sd3 / sd3_name / "config.json").read_bytes()
        assert content_key(flux / flux_name) == content_key(sd3 / sd3_name)
    # CLIP-G is a different encoder and must not be mistaken for CLIP-L.
    assert content_key(sd3 / "text_encoder_2") != content_key(sd3 / "text_encoder")


def test_rebuild_is_byte_identical(demo_models_dir, catalog, tmp_path):
    build_all(tmp_path, catalog=catalog)
    for spec in catalog:
        assert _tree(tmp_path / spec.local_dir) == _tree(demo_models_dir / spec.local_dir), spec.id


@pytest.mark.parametrize("engine", ENGINES)
def test_loads_offline_through_the_generic_entry_point(demo_models_dir, catalog, engine):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    root = demo_models_dir / engine
    variant = "fp16" if engine == "realvis_xl" else None
    pipeline = diffusers.DiffusionPipeline.from_pretrained(
        str(root), local_files_only=True, dtype=torch.float32, variant=variant
    )
    assert type(pipeline).__name__ == catalog[engine].pipeline_class
    index = json.loads((root / "model_index.json").read_text())
    for name, component in pipeline.components.items():
        if component is not None and name in index:
            library, class_name = index[name]
            # isinstance: transformers 5 keeps T5TokenizerFast as an alias of T5Tokenizer.
            assert isinstance(component, getattr(importlib.import_module(library), class_name))


def test_cli_builds_selected_engines_and_keeps_existing_ones(tmp_path, capsys):
    assert demo_snapshots.main(["--out", str(tmp_path), "--engine", "realvis_xl"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["realvis_xl"]
    weights = tmp_path / "realvis_xl" / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    first_mtime = weights.stat().st_mtime_ns
    assert demo_snapshots.main(["--out", str(tmp_path), "--engine", "realvis_xl"]) == 0
    assert weights.stat().st_mtime_ns == first_mtime  # kept without --force
    assert demo_snapshots.main(["--out", str(tmp_path), "--engine", "realvis_xl", "--force"]) == 0
    assert weights.stat().st_mtime_ns != first_mtime
    assert "realvis_xl" in capsys.readouterr().out


def test_never_overwrites_a_folder_of_real_weights(tmp_path):
    real = tmp_path / "flux1_dev"
    real.mkdir()
    (real / "model_index.json").write_text("{}")
    with pytest.raises(FileExistsError):
        demo_snapshots.main(["--out", str(tmp_path), "--engine", "flux1_dev", "--force"])
    assert (real / "model_index.json").read_text() == "{}"
