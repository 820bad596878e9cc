"""Real-size random snapshots: the catalog's engines at their real architectures, random weights.

    npm run models -- random <engine|all> [--models-dir DIR]      # on a GPU host
    python bench/gpu/snapshots.py --out MODELS_DIR [--engine ID ...] [--device cuda] [--tiny] [--force]

Each snapshot is laid out like the engine's hub repository (model_index.json, one folder per
component with config.json and sharded safetensors, tokenizers, scheduler), from the configs in
bench/gpu/configs/, so the worker loads it through its production from_pretrained path and spends
what the real checkpoint costs: same shapes, dtypes, bytes on disk and in memory. Only the values
are random (seeded by parameter name, see models.py), so images are noise, and the tokenizers are
the demo builders' small vocabularies (the real ones are not reachable offline; prompts are padded
to the real lengths, so the encoders do the real work).

FLUX.2 is written the way diffusers/FLUX.2-dev-bnb-4bit is: its transformer quantized to NF4 with
that repository's settings by diffusers' own bitsandbytes quantizer and saved with save_pretrained,
so config.json carries the quantization_config and loading it takes the pre-quantized path. That
needs bitsandbytes and, in diffusers, a GPU; on a CPU the writer quantizes anyway with
bitsandbytes' CPU kernels (--tiny only, for tests), giving a snapshot only a GPU worker can load.
The 24B Mistral text encoder (14 GB in NF4) is written only with --flux2-text-encoder: the four
engines without it take 59 GiB, which fills a 64 GiB disk; without it FLUX.2 runs on the remote
text encoder only.

Identical components are written once per MODELS_DIR (under .random-shared/, by recipe) and
hard-linked into each engine: FLUX.1 and SD3 share T5-XXL (9.8 GB) and CLIP-L, as the worker's
residency manager then shares them in memory too. Every file's sha256 is recorded in the marker
(flexyface-demo.json, "weights": "random"), so the worker need not hash 60 GB at each start.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "worker-python"))

import torch  # noqa: E402

import models as M  # noqa: E402
from flexy_worker.demo_snapshots import staged_folder  # noqa: E402

MARKER_FILE = "flexyface-demo.json"  # the worker's and the models CLI's marker of built snapshots
SHARED_DIR = ".random-shared"
RANDOM_NOTE = "real architecture and size, random weights; images are noise"
GB = 1e9


@dataclass(frozen=True)
class Part:
    """One weight-bearing component: a config of configs/, how it is stored, and its seed."""

    config: str
    seed: int
    dtype: str = "bfloat16"
    variant: str | None = None
    class_name: str | None = None  # another class than the config's (CLIP-L without projection)
    quant: str | None = None  # a *_bnb4 config: quantized with bitsandbytes by the library's quantizer
    shared: bool = False  # written once under .random-shared/ and hard-linked

    def plain(self) -> Part:
        return Part(self.config, self.seed, self.dtype, self.variant, self.class_name, None, self.shared)

    def recipe(self, tiny: bool) -> str:
        key = json.dumps([self.config, self.seed, self.dtype, self.variant, self.class_name, self.quant, tiny,
                          M.load_config(self.config, tiny)["config"], torch.__version__.split("+")[0]], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Engine:
    pipeline_class: str
    parts: dict[str, Part]
    others: dict[str, Any]  # scheduler and tokenizers: built by the demo builders
    class_overrides: dict[str, tuple[str, str]] = field(default_factory=dict)
    index_extras: dict[str, Any] = field(default_factory=dict)
    absent: dict[str, tuple[str, str]] = field(default_factory=dict)  # named in model_index, not written


def engines(flux2_text_encoder: bool) -> dict[str, Engine]:
    from flexy_worker import demo_snapshots as D

    # T5-XXL and CLIP-L: the same recipe in FLUX.1 and SD3, so the same bytes, written once.
    t5 = Part("t5_xxl", seed=104, shared=True)
    clip_l = Part("clip_l", seed=103, shared=True)
    flux2 = D.snapshot_flux2_dev_4bit
    flux2_parts = {"transformer": Part("flux2_dev_transformer", seed=100, quant="flux2_dev_transformer_bnb4"),
                   "vae": Part("flux2_dev_vae", seed=102)}  # fmt: skip
    absent = {}
    if flux2_text_encoder:
        flux2_parts["text_encoder"] = Part("mistral_small_3_1_24b", seed=101, quant="mistral_small_3_1_24b_bnb4")
    else:
        absent["text_encoder"] = ("transformers", "Mistral3ForConditionalGeneration")
    return {
        "flux2_dev_4bit": Engine("Flux2Pipeline", flux2_parts, lambda: _others(flux2()), absent=absent),
        "flux1_dev": Engine(
            "FluxPipeline",
            {"transformer": Part("flux1_dev_transformer", seed=110), "vae": Part("flux1_dev_vae", seed=112),
             "text_encoder": clip_l, "text_encoder_2": t5},
            lambda: _others(D.snapshot_flux1_dev()),
            # FLUX.1 reads CLIP-L as a plain CLIPTextModel; the files are SD3's, projection included.
            class_overrides={"text_encoder": ("transformers", "CLIPTextModel"),
                             "tokenizer_2": ("transformers", "T5TokenizerFast")},
        ),  # fmt: skip
        "sd3_medium": Engine(
            "StableDiffusion3Pipeline",
            {"transformer": Part("sd3_medium_transformer", seed=120), "vae": Part("sd3_medium_vae", seed=122),
             "text_encoder": clip_l, "text_encoder_2": Part("clip_g", seed=125), "text_encoder_3": t5},
            lambda: _others(D.snapshot_sd3_medium()),
            class_overrides={"tokenizer_3": ("transformers", "T5TokenizerFast")},
        ),  # fmt: skip
        "realvis_xl": Engine(
            "StableDiffusionXLPipeline",
            {"unet": Part("sdxl_unet", seed=130, dtype="float16", variant="fp16"),
             "vae": Part("sdxl_vae", seed=132, dtype="float16", variant="fp16"),
             "text_encoder": Part("clip_l", seed=133, dtype="float16", variant="fp16", class_name="CLIPTextModel"),
             "text_encoder_2": Part("clip_g", seed=135, dtype="float16", variant="fp16")},
            lambda: _others(D.snapshot_realvis_xl()),
            index_extras={"force_zeros_for_empty_prompt": True},
        ),  # fmt: skip
    }


def _others(snapshot: Any) -> dict[str, Any]:
    """The demo snapshot's scheduler and tokenizers (its tiny models are dropped unused)."""
    return {name: c for name, c in snapshot.components.items() if not isinstance(c, torch.nn.Module)}


# ---- writing one component ----------------------------------------------------------------------


def _doc(part: Part, tiny: bool) -> dict[str, Any]:
    doc = M.load_config(part.config, tiny)
    if part.class_name:
        doc = {**doc, "class": part.class_name}
    return doc


def write_part(part: Part, folder: Path, device: torch.device, tiny: bool) -> None:
    dtype = getattr(torch, part.dtype)
    doc = _doc(part, tiny)
    if part.quant and doc["library"] == "diffusers":
        model = _quantized_diffusers(doc, M.load_quant(part.quant), device, dtype, part.seed)
    elif part.quant:
        model = _quantized_transformers(doc, M.load_quant(part.quant), device, dtype, part.seed)
    else:
        model = M.materialize(M.construct_empty(doc), device, dtype, part.seed)
    kwargs: dict[str, Any] = {"safe_serialization": True, "max_shard_size": "10GB"}
    if part.variant:
        kwargs["variant"] = part.variant
    model.save_pretrained(folder, **kwargs)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _bnb_config(library: str, quant: dict[str, Any]):
    settings = {k: v for k, v in quant.items() if k != "note"}
    if library == "diffusers":
        from diffusers import BitsAndBytesConfig
    else:
        from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig(**settings)


def _quantized_diffusers(doc: dict[str, Any], quant: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int):
    """What ModelMixin.from_pretrained does with quantization_config=BitsAndBytesConfig(...) on a bf16
    checkpoint, fed random tensors instead of files: the library's quantizer swaps every Linear for a
    Linear4bit and quantizes each weight as it arrives; save_pretrained then writes it pre-quantized."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers.models.model_loading_utils import load_model_dict_into_meta
    from diffusers.quantizers import DiffusersAutoQuantizer

    config = _bnb_config("diffusers", quant)
    cls = getattr(diffusers, doc["class"])
    with init_empty_weights(include_buffers=False):
        model = cls.from_config({**doc["config"], "quantization_config": config})
    quantizer = DiffusersAutoQuantizer.from_config(config, pre_quantized=False)
    if device.type == "cuda":
        quantizer.validate_environment(torch_dtype=dtype, device_map=None)  # diffusers refuses CPU-only hosts
    device_map = {"": str(device)}
    quantizer.preprocess_model(model=model, device_map=device_map, keep_in_fp32_modules=[])
    _feed_random(model, lambda sd: load_model_dict_into_meta(model, sd, dtype=dtype, hf_quantizer=quantizer,
                                                            device_map=device_map), device, dtype, seed)  # fmt: skip
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    model.register_to_config(_pre_quantization_dtype=dtype)
    return model.eval()


def _quantized_transformers(doc: dict[str, Any], quant: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int):
    """A transformers model quantized by transformers' own loader: random bf16 weights handed to
    from_pretrained as a state dict (the whole bf16 model in device memory at once: 48 GB for the
    24B text encoder, so GPU hosts of 80 GB and more)."""
    import transformers

    config = getattr(transformers, doc["config_class"])(**doc["config"])
    full = M.materialize(M.construct_empty(doc), device, dtype, seed)
    state = full.state_dict()
    del full
    cls = getattr(transformers, doc["class"])
    return cls.from_pretrained(None, config=config, state_dict=state, dtype=dtype, device_map={"": str(device)},
                               quantization_config=_bnb_config("transformers", quant)).eval()  # fmt: skip


def _feed_random(model: torch.nn.Module, load, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Random values for every meta parameter, one module at a time, through load(state_dict)."""
    for qualname, module in model.named_modules():
        chunk = {}
        for pname, param in module._parameters.items():
            if param is None or param.device.type != "meta":
                continue
            full = f"{qualname}.{pname}" if qualname else pname
            target = dtype if param.is_floating_point() else param.dtype
            chunk[full] = M.random_tensor(module, pname, full, param.shape, target, device, seed)
        if chunk:
            load(chunk)
    for qualname, module in model.named_modules():  # buffers (rotary tables and the like) are real already
        for bname, buf in list(module._buffers.items()):
            if buf is not None and buf.device != device:
                module._buffers[bname] = buf.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- files, digests, links ----------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(16 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(root: Path, pool: concurrent.futures.Executor) -> dict[str, tuple[int, str]]:
    """relative path -> (size, sha256) for every file under root (hashlib releases the GIL: threads)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER_FILE)
    hashes = pool.map(_sha256, files)
    return {p.relative_to(root).as_posix(): (p.stat().st_size, h) for p, h in zip(files, hashes)}


def _link_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)


def _shared_part(part: Part, models_dir: Path, device: torch.device, tiny: bool, log) -> Path:
    """The folder holding part's files under .random-shared/, written on first use."""
    folder = models_dir / SHARED_DIR / f"{part.config}-{part.recipe(tiny)}"
    if (folder / "config.json").exists():
        log(f"  {part.config}: reusing {folder.relative_to(models_dir)}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(folder, prefix=part.config) as staging:
        write_part(part, staging, device, tiny)
    return folder


# ---- one engine ---------------------------------------------------------------------------------


def build_engine(engine_id: str, local_dir: str, models_dir: Path, device: torch.device, *, tiny: bool = False,
                 force: bool = False, flux2_text_encoder: bool = False, quantize: bool = True,
                 log=print) -> dict[str, Any]:  # fmt: skip
    """Write models_dir/local_dir atomically; an existing random or demo snapshot is replaced only with
    force, and a folder holding real weights never."""
    import diffusers

    target = models_dir / local_dir
    marker_path = target / MARKER_FILE
    if target.exists():
        if not marker_path.exists():
            raise FileExistsError(f"{target} exists and holds no built snapshot (real weights?); refusing to overwrite it")
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        if marker.get("weights") == "random" and not force:
            log(f"{engine_id}: random snapshot already at {target} (--force rebuilds it)")
            return marker
    spec = engines(flux2_text_encoder)[engine_id]
    if not quantize:  # a CPU worker can load it (the GPU tier's reduced run on a CPU)
        spec.parts = {name: part.plain() for name, part in spec.parts.items()}
    (models_dir / SHARED_DIR).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with staged_folder(target) as staging:
        index: dict[str, Any] = {"_class_name": spec.pipeline_class, "_diffusers_version": diffusers.__version__,
                                 **spec.index_extras}  # fmt: skip
        components: dict[str, Any] = {}
        for name, part in spec.parts.items():
            begun = time.perf_counter()
            if part.shared:
                _link_tree(_shared_part(part, models_dir, device, tiny, log), staging / name)
            else:
                write_part(part, staging / name, device, tiny)
            doc = _doc(part, tiny)
            index[name] = [doc["library"], doc["class"]]
            components[name] = {"config": part.config, "dtype": part.dtype, "quantization": part.quant and "bitsandbytes nf4",
                                "linked": part.shared, "seconds": round(time.perf_counter() - begun, 1)}  # fmt: skip
            log(f"  {engine_id}/{name}: {part.config}{' (nf4)' if part.quant else ''} in {components[name]['seconds']} s")
        for name, component in spec.others().items():
            component.save_pretrained(staging / name)
            index[name] = [component.__class__.__module__.split(".")[0], component.__class__.__name__]
        for name, (library, class_name) in {**spec.class_overrides, **spec.absent}.items():
            index[name] = [library, class_name]
        (staging / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            digests = file_digests(staging, pool)
        revision = hashlib.sha256("\n".join(f"{p} {h}" for p, (_, h) in sorted(digests.items())).encode()).hexdigest()
        quantized = [name for name, part in spec.parts.items() if part.quant]
        marker = {
            "weights": "random",
            "engine": engine_id,
            "revision": f"random-{revision[:12]}",
            "note": RANDOM_NOTE + ("; tiny configs" if tiny else ""),
            "tiny": tiny,
            "components": components,
            "quantized": {name: "bitsandbytes nf4, pre-quantized (save_pretrained)" for name in quantized},
            "absent": sorted(spec.absent),
            "bytes": sum(size for size, _ in digests.values()),
            "files": [{"path": p, "size": size, "sha256": h} for p, (size, h) in sorted(digests.items())],
            "seconds": round(time.perf_counter() - started, 1),
            "device": str(device),
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(f"{engine_id}: {marker['bytes'] / GB:.2f} GB at {target} in {marker['seconds']} s ({marker['revision']})")
    return marker


def disk_usage(models_dir: Path) -> int:
    """Bytes the snapshots take on disk, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in models_dir.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu/snapshots.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="MODELS_DIR to write the snapshots into")
    parser.add_argument("--engine", action="append", dest="engines", help="engine id (repeatable; default all)")
    parser.add_argument("--device", default=None, help="where weights are made (default: cuda when present, else cpu)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (tests on a CPU)")
    parser.add_argument("--force", action="store_true", help="rebuild random snapshots that already exist")
    parser.add_argument("--no-quantize", action="store_true",
                        help="write FLUX.2 unquantized, so a CPU worker can load it (with --tiny: the GPU tier's reduced run)")
    parser.add_argument("--flux2-text-encoder", action="store_true",
                        help="also write FLUX.2's local text encoder (Mistral 24B, NF4, 14 GB; needs 80 GB of GPU memory)")
    args = parser.parse_args(argv)
    from flexy_worker.catalog import load_catalog
    from flexy_worker.demo_snapshots import quiet_libraries

    quiet_libraries()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.tiny:
        parser.error("real-size snapshots are made on a GPU (--device cuda); on a CPU use --tiny")
    if args.no_quantize and not args.tiny:
        parser.error("--no-quantize is for tiny snapshots only: the real FLUX.2 [dev] 4-bit repository is pre-quantized")
    catalog = load_catalog()
    known = engines(args.flux2_text_encoder)
    selected = args.engines or [spec.id for spec in catalog if spec.id in known]
    unknown = [e for e in selected if e not in known]
    if unknown:
        parser.error(f"no random snapshot recipe for {', '.join(unknown)}; known: {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    failed = []
    for engine_id in selected:
        try:
            build_engine(engine_id, catalog[engine_id].local_dir, args.out, device, tiny=args.tiny, force=args.force,
                         flux2_text_encoder=args.flux2_text_encoder, quantize=not args.no_quantize,
                         log=lambda m: print(m, flush=True))  # fmt: skip
        except Exception as exc:  # one engine's failure (bitsandbytes missing, say) must not cost the others
            import traceback

            traceback.print_exc()
            print(f"{engine_id}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            failed.append(engine_id)
    print(f"random snapshots in {args.out}: {disk_usage(args.out) / GB:.2f} GB on disk, {time.perf_counter() - started:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
