"""The engine manager: validates a request against the catalog, makes its engine resident and runs
the engine's real diffusers pipeline from the local snapshot.

The worker loop calls, from its one GPU thread:

    manager = EngineManager(catalog, models_dir, device, dtype, budget_bytes, text_encoder_mode)
    manager.available()                                   # snapshots present, demo or hub, with their health
    manager.load(engine)                                  # preload
    manager.generate(request, on_step, should_cancel)     # -> GenerateOutput
    manager.unload(engine | None)
    manager.residency()                                   # ResidencyReport of protocol.ts
    manager.check_engines()                               # now and then, while idle: files still intact?

Health is per engine (``health.py``): loading an engine checks its files against the snapshot's
manifest first (``integrity.py``) and ends with a one-step canary generation; an engine that fails
either is unavailable, with the reason, and its jobs fail at once until it is tried again, while the
other engines keep serving.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch

from ..catalog import Catalog, EngineSpec
from ..errors import (
    BadInput,
    CudaFatal,
    EngineUnavailable,
    JobCancelled,
    OutOfMemory,
    WorkerError,
    classify_exception,
)

if TYPE_CHECKING:
    from ..acceleration import FastPath
from ..residency import ResidencyManager, config_digest, content_key, weight_files
from .adapters import LOCAL, REMOTE, PipelineAdapter, adapter_for, embeds_shape_tail
from .base import GenerateOutput, GenerateRequest, StepEvent
from .health import HealthBook
from .integrity import SnapshotVerifier, recorded_files

log = logging.getLogger(__name__)

DEMO_MARKER_FILE = "flexyface-demo.json"  # written by demo_snapshots.py
HUB_MANIFEST_FILE = "flexyface-manifest.json"  # written by the models CLI (libs/hub)
PREVIEW_MAX_SIDE = 64
MAX_REFERENCE_PIXELS = 16 * 1024 * 1024
MAX_REFERENCE_ASPECT = 8  # Flux2ImageProcessor.check_image_input refuses more extreme images
CANARY_PROMPT = "canary"  # the prompt of the one-step generation an engine passes at its first load
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedEngine:
    spec: EngineSpec
    path: Path
    pipeline: Any
    adapter: PipelineAdapter
    weights: str
    revision: str
    variant: str | None
    text_encoder_source: str


def snapshot_identity(path: Path, spec: EngineSpec) -> tuple[str, str]:
    """("demo" | "random" | "hub", revision) of the snapshot at path. Built snapshots carry a marker:
    "demo" (tiny, demo_snapshots.py) or "random" (real-size random weights, bench/gpu/snapshots.py)."""
    marker = path / DEMO_MARKER_FILE
    if marker.exists():
        data = json.loads(marker.read_text(encoding="utf-8"))
        kind = "random" if data.get("weights") == "random" else "demo"
        return kind, str(data.get("revision", kind))
    manifest = path / HUB_MANIFEST_FILE
    if manifest.exists():
        try:
            return "hub", str(json.loads(manifest.read_text(encoding="utf-8"))["revision"])
        except (ValueError, KeyError):
            log.warning("unreadable %s; reporting the catalog revision", manifest)
    return "hub", spec.revision


def _manifest_digests(path: Path) -> dict[Path, tuple[int, str]]:
    """File digests the models CLI (or a snapshot builder, in its marker) recorded, so multi-GB
    weights need not be hashed again."""
    return {path / relative: (size, sha256) for relative, (size, sha256) in (recorded_files(path) or {}).items() if sha256}


def snapshot_variant(path: Path, model_index: dict[str, Any]) -> str | None:
    """'fp16' when the snapshot holds only *.fp16.safetensors weights (RealVisXL's download set)."""
    for name in _component_names(model_index):
        files = list((path / name).glob("*.safetensors"))
        if files and all(".fp16." in f.name or ".fp16-" in f.name for f in files):
            return "fp16"
    return None


def _component_names(model_index: dict[str, Any]) -> list[str]:
    return [
        name
        for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0]
    ]


def _component_class(model_index: dict[str, Any], name: str) -> type | None:
    library, class_name = model_index[name]
    try:
        return getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError):
        return None


def quantization_refusal(path: Path, model_index: dict[str, Any], device: torch.device, skipped: set[str]) -> str | None:
    """Why this device cannot load the snapshot's pre-quantized components, or None. bitsandbytes
    checkpoints (diffusers/FLUX.2-dev-bnb-4bit) load only onto a GPU: diffusers' quantizer refuses
    any host without one, so say so before from_pretrained fails deeper with a less direct message."""
    if device.type == "cuda":
        return None
    quantized = []
    for name in _component_names(model_index):
        config = path / name / "config.json"
        if name in skipped or not config.exists():
            continue
        method = (json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}).get("quant_method")
        if method == "bitsandbytes":
            quantized.append(name)
    if not quantized:
        return None
    return (f"{' and '.join(quantized)} in {path} {'is' if len(quantized) == 1 else 'are'} pre-quantized with bitsandbytes "
            f"(4-bit), which loads only onto a CUDA GPU; this worker runs on {device.type}")


def latent_preview(latents: torch.Tensor, height: int, width: int, patch_pixels: int) -> np.ndarray | None:
    """A small RGB picture of the first image's latents: a fixed linear projection of the latent
    channels to RGB (no VAE), so a preview costs microseconds. patch_pixels is the image size of
    one latent token of packed (B, tokens, C) latents; (B, C, h, w) latents carry their own grid."""
    first = latents[0].detach().float()
    if first.ndim == 2:  # packed: tokens in row-major order over the latent grid
        rows, cols = height // patch_pixels, width // patch_pixels
        if rows * cols != first.shape[0]:
            return None
        grid = first.reshape(rows, cols, -1).permute(2, 0, 1)
    elif first.ndim == 3:
        grid = first
    else:
        return None
    channels = grid.shape[0]
    # Drawn on the CPU (the same projection on every device), applied where the latents are: on a GPU
    # only the small picture crosses to the host.
    projection = torch.randn(channels, 3, generator=torch.Generator().manual_seed(channels)) / math.sqrt(channels)
    projection = projection.to(grid.device)
    flat = grid.reshape(channels, -1)
    flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + 1e-6)
    rgb = (projection.T @ flat).reshape(3, *grid.shape[1:])
    scale = min(1.0, PREVIEW_MAX_SIDE / max(rgb.shape[1:]))
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[2] * scale)))
    rgb = torch.nn.functional.adaptive_avg_pool2d(rgb[None], size)[0]
    pixels = ((torch.tanh(rgb) * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().cpu().numpy()


def to_rgb8(images: np.ndarray) -> list[np.ndarray]:
    """Pipeline output (B, H, W, 3) floats in [0, 1] to uint8 frames, rounded as diffusers does."""
    return [np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)) for image in images]


class EngineManager:
    def __init__(
        self,
        catalog: Catalog,
        models_dir: str | os.PathLike[str],
        device: str | torch.device,
        dtype: torch.dtype | str,
        budget_bytes: int,
        text_encoder_mode: str = "auto",
        *,
        remote_url: str | None = None,
        remote_token: str | None = None,
        remote_timeout_s: float = 60.0,
        fast_paths: Mapping[str, FastPath] | None = None,
    ):
        self.catalog = catalog
        self.models_dir = Path(models_dir)
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.text_encoder_mode = text_encoder_mode
        # The remote encoder's address (None: the catalog's) and token come from the worker's settings.
        self.remote_url = remote_url
        self.remote_token = remote_token
        self.remote_timeout_s = remote_timeout_s
        # FLEXY_FAST_PATH parsed by the worker's settings: engine id (or "*") -> fast path.
        self.fast_paths = dict(fast_paths or {})
        self.residency_manager = ResidencyManager(self.device, budget_bytes)
        self._loaded: dict[str, LoadedEngine] = {}
        self._inject_oom = 0
        # Engines meant to stay resident together (the worker's preload set): a fast path that would
        # grow an engine (NF4 -> FP8) is only taken where it still fits beside them.
        self.keep_resident: tuple[str, ...] = ()
        self.health = HealthBook(spec.id for spec in catalog)
        self.verifier = SnapshotVerifier()

    # ---- what is here -------------------------------------------------------------------------

    def snapshot_path(self, engine: str) -> Path:
        return self.models_dir / self.catalog[engine].local_dir

    def available(self) -> list[dict[str, Any]]:
        """Engines whose snapshot is here: weights kind, revision and health (state, reason, retry_at in ms)."""
        found = []
        for spec in self.catalog:
            path = self.models_dir / spec.local_dir
            if (path / "model_index.json").exists():
                weights, revision = snapshot_identity(path, spec)
                health = self.health[spec.id]
                retry_at = round(health.retry_at * 1000) if health.retry_at is not None else None
                found.append({"engine": spec.id, "weights": weights, "revision": revision, "state": health.state,
                              "reason": health.reason, "retry_at": retry_at})  # fmt: skip
        return found

    def check_engines(self) -> list[str]:
        """The periodic look at every snapshot here: an available engine whose files no longer match
        their manifest becomes unavailable (and is unloaded: a restart could not load it either); an
        unavailable one whose retry is due and whose files pass is available again. Returns the engines
        whose state changed."""
        changed = []
        for spec in self.catalog:
            path = self.models_dir / spec.local_dir
            if not (path / "model_index.json").exists():
                continue
            health = self.health[spec.id]
            if health.state == "unavailable" and spec.id not in self.health.due():
                continue
            problem = self.verifier.check(path)
            if problem is None:
                if health.state == "unavailable":
                    log.info("%s: files pass their check again; available for the next load", spec.id)
                    self.health.retrying(spec.id)
                    changed.append(spec.id)
                continue
            if health.state == "available" and spec.id in self._loaded:
                self.unload(spec.id)
            was = health.state
            self.health.failed(spec.id, problem)
            log.warning("%s unavailable: %s", spec.id, problem)
            if was == "available":
                changed.append(spec.id)
        return changed

    def loaded(self, engine: str) -> LoadedEngine | None:
        return self._loaded.get(engine)

    def residency(self) -> dict:
        return self.residency_manager.report()

    # ---- loading ------------------------------------------------------------------------------

    def load(self, engine: str) -> float:
        """Make engine resident on the device (loading it first if needed); returns ms spent."""
        if engine not in self.catalog:
            raise BadInput(f"unknown engine {engine!r}", field="engine")
        started = time.perf_counter()
        loaded = self._loaded.get(engine)
        if loaded is None:
            refusal = self.health.refusal(engine)
            if refusal:
                raise EngineUnavailable(refusal)
            try:
                self._load(engine)
            except EngineUnavailable as exc:
                health = self.health.failed(engine, exc.message)
                log.warning("%s unavailable: %s (tried again in %.0f s)", engine, exc.message, (health.retry_at or 0) - time.time())
                raise
            self.health.loaded(engine)
        else:
            swap_ms = self.residency_manager.activate(engine)
            if swap_ms:
                self.residency_manager.last_swap_ms = swap_ms
        return (time.perf_counter() - started) * 1000

    def _load(self, engine: str) -> LoadedEngine:
        import diffusers

        started = time.perf_counter()
        spec = self.catalog[engine]
        path = self.models_dir / spec.local_dir
        index_file = path / "model_index.json"
        if not index_file.exists():
            raise EngineUnavailable(
                f"no snapshot of {engine} at {path}: pull it with the models CLI or build demo snapshots"
            )
        model_index = json.loads(index_file.read_text(encoding="utf-8"))
        pipeline_class = getattr(diffusers, spec.pipeline_class, None)
        if pipeline_class is None or model_index.get("_class_name") != spec.pipeline_class:
            raise EngineUnavailable(
                f"{path} holds a {model_index.get('_class_name')} snapshot; the catalog expects {spec.pipeline_class}"
            )
        adapter = adapter_for(spec)
        source = adapter.text_encoder_source(self)
        refusal = quantization_refusal(path, model_index, self.device, set(adapter.load_overrides(source)))
        if refusal:
            raise EngineUnavailable(f"{engine}: {refusal}")
        problem = self.verifier.check(path)
        if problem:
            raise EngineUnavailable(f"{engine}: {problem}")
        variant = snapshot_variant(path, model_index)
        digests = _manifest_digests(path)

        overrides: dict[str, Any] = dict(adapter.load_overrides(source))
        keys: dict[str, str | None] = {}
        configs: dict[str, str | None] = {}
        new_bytes = 0
        for name in _component_names(model_index):
            folder = path / name
            if name in overrides or not weight_files(folder, variant):
                continue
            keys[name] = content_key(folder, variant, digests)
            configs[name] = config_digest(folder)
            component_class = _component_class(model_index, name)
            shared = (
                self.residency_manager.shareable(keys[name], component_class, configs[name]) if component_class else None
            )
            if shared is not None:
                overrides[name] = shared
            elif not self.residency_manager.known(keys[name]):
                new_bytes += sum(f.stat().st_size for f in weight_files(folder, variant))
        # Room before loading: quantized checkpoints land on the device during from_pretrained.
        self.residency_manager.reserve(new_bytes)
        try:
            pipeline = pipeline_class.from_pretrained(
                str(path), local_files_only=True, dtype=self.dtype, variant=variant, **overrides
            )
        except Exception as exc:
            raise self._load_failure(engine, exc) from None
        pipeline.set_progress_bar_config(disable=True)
        weights, revision = snapshot_identity(path, spec)
        loaded = LoadedEngine(spec, path, pipeline, adapter, weights, revision, variant, source)
        self._loaded[engine] = loaded
        for name, component in pipeline.components.items():
            if isinstance(component, torch.nn.Module):
                component.eval()
                self.residency_manager.attach(engine, name, component, keys.get(name), configs.get(name))
        try:
            self.residency_manager.activate(engine)
            self._prepare_denoiser(engine, pipeline)
            if not self._apply_fast_path(engine, pipeline, keys, configs):
                self._canary(loaded)
        except Exception as exc:
            self.unload(engine)
            raise self._load_failure(engine, exc) from None
        self.residency_manager.last_load_ms = (time.perf_counter() - started) * 1000
        log.info(
            "loaded %s (%s weights, %s) in %.0f ms; text encoder %s",
            engine, weights, revision, self.residency_manager.last_load_ms, source,
        )  # fmt: skip
        return loaded

    def _prepare_denoiser(self, engine: str, pipeline: Any) -> None:
        """After loading, before the fast path: nothing here; a device group's manager applies context
        parallelism to the denoiser (parallel.py)."""

    def _apply_fast_path(self, engine: str, pipeline: Any, keys: dict, configs: dict) -> bool:
        """The deployment's fast path for engine (FLEXY_FAST_PATH, see acceleration.py), warmed up
        here so that compilation happens during load or preload, not in a job. True when a warm-up ran
        (it generated at the default size: the canary would only compile a second size)."""
        from ..acceleration import accelerate_engine

        path = self.fast_paths.get(engine) or self.fast_paths.get("*")
        report = None if path is None else accelerate_engine(pipeline, self.catalog[engine], path, device=self.device,
                                                              room=self._fast_path_room(engine))  # fmt: skip
        if report is None:
            return False
        for name, component in pipeline.components.items():  # FP8 weights: count the bytes again
            if isinstance(component, torch.nn.Module):
                self.residency_manager.attach(engine, name, component, keys.get(name), configs.get(name))
        return getattr(report, "warm_up_ms", None) is not None

    def _canary(self, loaded: LoadedEngine) -> None:
        """One step at the engine's smallest size through the whole pipeline (text encoders, denoiser,
        VAE): an engine serves once it has made an image in this process, so weights that load but
        cannot run fail here, on load, and not in a job. FLUX.2 with the remote encoder gets zero
        embeddings of the right shape: the canary never waits on the network."""
        from ..acceleration import warm_up_kwargs

        spec = loaded.spec
        side = max(spec.limits.min_side, spec.limits.size_multiple * 4)
        kwargs = warm_up_kwargs(loaded.pipeline, side, side, steps=1, negative=bool(spec.limits.negative_prompt),
                                guidance=spec.defaults.guidance)  # fmt: skip
        kwargs["output_type"] = "np"
        if "prompt" in kwargs:
            kwargs["prompt"] = CANARY_PROMPT
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                loaded.pipeline(**kwargs, generator=torch.Generator(device="cpu").manual_seed(0))
        except Exception as exc:
            classified = classify_exception(exc)
            if isinstance(classified, (OutOfMemory, CudaFatal)):  # the device's trouble, not the engine's
                raise classified from None
            raise EngineUnavailable(f"{spec.id} failed its canary generation: {classified.message}") from None
        log.info("canary of %s passed in %.0f ms", spec.id, (time.perf_counter() - started) * 1000)

    def _fast_path_room(self, engine: str):
        """The device budget and what the other engines of keep_resident hold: their resident bytes
        when loaded, else the catalog's estimate."""
        from ..acceleration import MemoryRoom

        others = tuple(e for e in dict.fromkeys(self.keep_resident) if e != engine and e in self.catalog)
        held = sum(self.residency_manager.engine_bytes(e) if e in self._loaded
                   else int(self.catalog[e].memory_estimate_gb * 1e9) for e in others)  # fmt: skip
        return MemoryRoom(self.residency_manager.budget_bytes, held, others)

    @staticmethod
    def _load_failure(engine: str, exc: BaseException) -> WorkerError:
        classified = classify_exception(exc)
        if classified.code == "internal":
            return EngineUnavailable(f"could not load {engine}: {classified.message}")
        return classified

    def attach_local_text_encoder(self, loaded: LoadedEngine) -> None:
        """Load the snapshot's own text encoder into a pipeline that was loaded without it."""
        model_index = json.loads((loaded.path / "model_index.json").read_text(encoding="utf-8"))
        folder = loaded.path / "text_encoder"
        component_class = _component_class(model_index, "text_encoder") if "text_encoder" in model_index else None
        if component_class is None or not weight_files(folder, loaded.variant):
            raise EngineUnavailable(f"{loaded.spec.id} has no local text encoder in {folder}")
        key = content_key(folder, loaded.variant, _manifest_digests(loaded.path))
        config = config_digest(folder)
        module = self.residency_manager.shareable(key, component_class, config)
        if module is None:
            kwargs = {"variant": loaded.variant} if loaded.variant else {}
            module = component_class.from_pretrained(str(folder), dtype=self.dtype, local_files_only=True, **kwargs)
            module.eval()
        loaded.pipeline.register_modules(text_encoder=module)
        self.residency_manager.attach(loaded.spec.id, "text_encoder", module, key, config)
        self.residency_manager.activate(loaded.spec.id)
        loaded.text_encoder_source = LOCAL

    def fetch_remote_prompt_embeds(self, prompts: list[str], loaded: LoadedEngine) -> torch.Tensor:
        from ..remote_text_encoder import fetch_prompt_embeds

        tail = embeds_shape_tail(loaded)
        url = self.remote_url or (loaded.spec.text_encoder.remote_url if loaded.spec.text_encoder else None)
        # Room for float32 (the widest accepted dtype) plus the pickle's own framing.
        max_bytes = len(prompts) * tail[0] * tail[1] * 4 + (1 << 20)
        return fetch_prompt_embeds(prompts, url, self.remote_token, self.remote_timeout_s, max_bytes, tail)

    def unload(self, engine: str | None = None) -> None:
        """Drop engine (every engine when None); components another engine shares stay."""
        for name in [engine] if engine is not None else list(self._loaded):
            if self._loaded.pop(name, None) is not None:
                self.residency_manager.detach(name)
        self._free_device_memory()

    def _free_device_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- validation ---------------------------------------------------------------------------

    def validate(self, request: GenerateRequest) -> EngineSpec:
        """Check the request against the engine's catalog limits; BadInput names the field."""
        if request.engine not in self.catalog:
            raise BadInput(f"unknown engine {request.engine!r}", field="engine")
        spec = self.catalog[request.engine]
        limits = spec.limits

        def integer(name: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadInput(f"{name} must be an integer", field=name)
            return value

        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise BadInput("prompt must be a non-empty string", field="prompt")
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if isinstance(text, str) and not _well_formed(text):
                raise BadInput(f"{name} must be well-formed Unicode text without NUL characters", field=name)
        if len(request.prompt) > limits.max_prompt_chars:
            raise BadInput(f"prompt is longer than {limits.max_prompt_chars} characters", field="prompt")
        if request.negative_prompt:
            if not limits.negative_prompt:
                raise BadInput(f"{spec.id} does not use a negative prompt", field="negative_prompt")
            if not isinstance(request.negative_prompt, str) or len(request.negative_prompt) > limits.max_prompt_chars:
                raise BadInput(
                    f"negative_prompt must be a string of at most {limits.max_prompt_chars} characters",
                    field="negative_prompt",
                )
        seeds = self.catalog.seed
        if not seeds.contains(integer("seed", request.seed)):
            raise BadInput(f"seed must be between {seeds.min:g} and {seeds.max:g}", field="seed")
        if not limits.steps.contains(integer("steps", request.steps)):
            raise BadInput(f"steps must be between {limits.steps.min:g} and {limits.steps.max:g}", field="steps")
        guidance = request.guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
            raise BadInput("guidance must be a finite number", field="guidance")
        if not limits.guidance.contains(guidance):
            raise BadInput(
                f"guidance must be between {limits.guidance.min:g} and {limits.guidance.max:g}", field="guidance"
            )
        for name in ("width", "height"):
            side = integer(name, getattr(request, name))
            if not limits.min_side <= side <= limits.max_side:
                raise BadInput(f"{name} must be between {limits.min_side} and {limits.max_side}", field=name)
            if side % limits.size_multiple:
                raise BadInput(f"{name} must be a multiple of {limits.size_multiple}", field=name)
        if request.width * request.height > limits.max_pixels:
            raise BadInput(
                f"width x height must not exceed {limits.max_pixels} pixels", field="width" if request.width >= request.height else "height"
            )
        if not 1 <= integer("num_images", request.num_images) <= limits.max_images:
            raise BadInput(f"num_images must be between 1 and {limits.max_images}", field="num_images")
        if integer("preview_every", request.preview_every) < 0:
            raise BadInput("preview_every must not be negative", field="preview_every")
        references = request.references or []
        if len(references) > limits.max_references:
            raise BadInput(
                f"{spec.id} takes at most {limits.max_references} reference images, got {len(references)}",
                field="references",
            )
        for index, image in enumerate(references):
            if not isinstance(image, PIL.Image.Image):
                raise BadInput(f"reference {index} is not an image", field="references")
            if (
                min(image.size) < limits.min_side
                or image.width * image.height > MAX_REFERENCE_PIXELS
                or max(image.size) > MAX_REFERENCE_ASPECT * min(image.size)
            ):
                raise BadInput(
                    f"reference {index} is {image.width}x{image.height}; each side must be at least "
                    f"{limits.min_side} px, the aspect ratio at most {MAX_REFERENCE_ASPECT}:1 and the image "
                    f"at most {MAX_REFERENCE_PIXELS} pixels",
                    field="references",
                )
        return spec

    # ---- generating ---------------------------------------------------------------------------

    def inject_oom_on_next_denoise(self, count: int = 1) -> None:
        """Fault injection: the next count denoising runs raise torch.cuda.OutOfMemoryError at their
        first transformer/UNet call, as a real allocation failure there would."""
        self._inject_oom += count

    def generate(
        self,
        request: GenerateRequest,
        on_step: Callable[[StepEvent], None],
        should_cancel: Callable[[], bool],
    ) -> GenerateOutput:
        started = time.perf_counter()
        self.validate(request)
        if should_cancel():
            raise JobCancelled("cancelled before it started")
        failure: WorkerError | None = None
        try:
            load_ms = self.load(request.engine)
            if should_cancel():
                raise JobCancelled("cancelled before the first step")
            loaded = self._loaded[request.engine]
            images, phases = self._run(loaded, request, on_step, should_cancel, started)
        except Exception as exc:
            failure = classify_exception(exc)
        if failure is not None:
            # Raised outside the except block with no traceback: the pipeline frames (and the device
            # tensors they hold) are released before anyone handles the error.
            failure.__traceback__ = None
            failure.__context__ = None
            if isinstance(failure, OutOfMemory):
                self.recover_from_oom(request.engine)
            raise failure
        timings = {"load_ms": load_ms, **phases, "total_ms": (time.perf_counter() - started) * 1000}
        return GenerateOutput(
            images=images,
            timings={name: round(value, 3) for name, value in timings.items()},
            weights=loaded.weights,
            revision=loaded.revision,
        )

    def recover_from_oom(self, engine: str) -> None:
        """After an OOM: free the failed run's memory and park every other engine in host memory, so
        the next request (usually a retry of this one) has the device to itself."""
        gc.collect()
        self.residency_manager.evict_all(keep=engine if engine in self._loaded else None)
        self._free_device_memory()

    def _run(
        self,
        loaded: LoadedEngine,
        request: GenerateRequest,
        on_step: Callable[[StepEvent], None],
        should_cancel: Callable[[], bool],
        started: float,
    ) -> tuple[list[np.ndarray], dict[str, float]]:
        pipe = loaded.pipeline
        prompt_kwargs, outside_encode_ms = loaded.adapter.prompt_kwargs(request, loaded, self)
        marks: dict[str, float] = {"encode_ms": 0.0}
        total_steps = request.steps
        patch_pixels = getattr(pipe, "vae_scale_factor", 8) * 2

        def on_step_end(pipeline, index: int, timestep, tensors: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            marks["last_step"] = now
            step = index + 1
            preview = None
            if request.preview_every and step % request.preview_every == 0:
                preview = latent_preview(tensors["latents"], request.height, request.width, patch_pixels)
            on_step(StepEvent(step=step, total_steps=total_steps, elapsed_ms=(now - started) * 1000, preview=preview))
            if should_cancel():
                pipeline._interrupt = True
                raise JobCancelled(f"cancelled after step {step} of {total_steps}")
            return {}

        encode_prompt = pipe.encode_prompt

        def timed_encode_prompt(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return encode_prompt(*args, **kwargs)
            finally:
                marks["encode_end"] = time.perf_counter()
                marks["encode_ms"] += (marks["encode_end"] - begun) * 1000

        denoiser = getattr(pipe, "transformer", None) or pipe.unet
        hooks = []
        if self._inject_oom > 0:
            self._inject_oom -= 1
            hooks.append(denoiser.register_forward_pre_hook(_raise_injected_oom))
        pipe.encode_prompt = timed_encode_prompt  # instance attribute: times this call only
        call_started = time.perf_counter()
        try:
            with torch.inference_mode():
                output = pipe(
                    **prompt_kwargs,
                    **loaded.adapter.condition_kwargs(request),
                    width=request.width,
                    height=request.height,
                    num_inference_steps=request.steps,
                    guidance_scale=float(request.guidance),
                    num_images_per_prompt=request.num_images,
                    # A CPU generator gives the same noise for a seed on every device.
                    generator=torch.Generator(device="cpu").manual_seed(request.seed),
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                )
        finally:
            del pipe.encode_prompt
            for hook in hooks:
                hook.remove()
        call_ended = time.perf_counter()
        denoise_started = marks.get("encode_end", call_started)
        denoise_ended = marks.get("last_step", call_ended)
        phases = {
            "text_encode_ms": outside_encode_ms + marks["encode_ms"],
            # Includes preparing latents and VAE-encoding reference images (FLUX.2).
            "denoise_ms": (denoise_ended - denoise_started) * 1000,
            # VAE decode and conversion to pixels.
            "decode_ms": (call_ended - denoise_ended) * 1000,
        }
        return to_rgb8(output.images), phases


def _raise_injected_oom(module, args):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected fault)")


def _well_formed(text: str) -> bool:
    """No lone surrogates (JSON can carry them; no tokenizer can take them) and no NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
