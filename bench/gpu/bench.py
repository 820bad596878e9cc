"""GPU benchmarks of the worker on the real model architectures (random weights, real sizes).

    python bench/gpu/bench.py --suite all            # or one of the suites below
    bash bench/gpu/run_all.sh                        # the same, with the environment set up

Suites:
  flux2-step     one FLUX.2 [dev] transformer step at 1024x1024 (4096 image + 512 text tokens):
                 bf16 eager (each SDPA backend), bf16 + regional compile, FP8 row-wise + compile,
                 FP8 eager, NF4 (bitsandbytes) eager and compiled, NF4 dequantized to FP8 + compile,
                 FP8 per-tensor + compile; relative error of each against bf16 on the same weights.
  pipe-flux2     FLUX.2 [dev] 4-bit (NF4 transformer, remote text encoder): the worker's generate()
                 beside a plain diffusers call on the same pipeline object, then the fast paths and
                 the step cache; a side-by-side image of the real-size run.
  pipe-others    the same for FLUX.1 [dev], SD3 Medium and RealVisXL.
  residency      host-to-device bandwidth; peak memory of FLUX.2 with the local NF4 text encoder;
                 three engines served under a 32 GB cap; compile cost of a fresh and a restarted
                 process (persistent compile cache).

Every measurement appends one JSON object per line to bench/results/gpu.jsonl (and to $OUT/gpu.jsonl
when OUT is set). --tiny runs every suite on tiny configs (CPU works) to check the bench itself;
tiny rows go to bench/results/gpu-tiny.jsonl, never to gpu.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "worker-python"))

import torch  # noqa: E402

import models as M  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu.jsonl"
TINY_RESULTS = ROOT / "bench" / "results" / "gpu-tiny.jsonl"
GB = 1e9
STARTED = time.perf_counter()


# ---- recording ----------------------------------------------------------------------------------


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except Exception:
        return None


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


STAMP = ROOT / "BENCH_COMMIT"  # written by bench/gpu/stage.sh into a copy of a commit (git archive)


def code_identity() -> dict[str, Any]:
    """Which code ran: {'commit', 'commit_state'}. In a checkout, HEAD and whether tracked files
    differ from it ('dirty': the commit alone does not reproduce the run); in a copy made by
    stage.sh (a device without git), the commit written into it ('archive': exactly that commit)."""
    if STAMP.exists():
        return {"commit": STAMP.read_text(encoding="utf-8").split()[0][:12], "commit_state": "archive"}
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return {"commit": None, "commit_state": "unknown (no git)"}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=20).stdout.strip()  # fmt: skip
        return {"commit": head.stdout.strip(), "commit_state": "dirty" if dirty else "clean"}
    except Exception:
        return {"commit": None, "commit_state": "unknown (no git)"}


class Recorder:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.tiny = args.tiny
        self.path = Path(args.results) if args.results else (TINY_RESULTS if args.tiny else RESULTS)
        self.out = Path(os.environ["OUT"]) / ("gpu-tiny.jsonl" if args.tiny else "gpu.jsonl") if os.environ.get("OUT") else None
        # The command that ran: run_all.sh passes its own invocation (BENCH_COMMAND); a direct call is
        # its own argv. argv is always the Python process's, for the exact arguments.
        self.argv = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
        self.command = args.command or os.environ.get("BENCH_COMMAND") or self.argv
        self.device = device
        cuda = device.type == "cuda"
        self.common = {
            "card": torch.cuda.get_device_name(device) if cuda else "cpu",
            "driver": _driver() if cuda else None,
            "cuda": torch.version.cuda,
            "torch": torch.__version__,
            "diffusers": _version("diffusers"),
            "transformers": _version("transformers"),
            "bitsandbytes": _version("bitsandbytes"),
            "torchao": _version("torchao"),
            "cudnn_frontend": _version("nvidia-cudnn-frontend"),
            **code_identity(),
            "weights": "random (real architecture and size)" if not args.tiny else "random (tiny configs)",
            "init": "normal(0, 1/sqrt(3*fan_in)) linear/conv weights",
        }
        self.rows: list[dict[str, Any]] = []

    def row(self, **fields: Any) -> dict[str, Any]:
        row = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **self.common,
               "command": fields.pop("command", self.command), "argv": self.argv, **fields}  # fmt: skip
        for key in ("s_per_step", "s_per_image", "peak_gb"):
            row.setdefault(key, None)
        line = json.dumps(row, default=_jsonable)
        for path in filter(None, (self.path, self.out)):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        self.rows.append(row)
        shown = {k: row.get(k) for k in ("engine", "mode", "s_per_step", "s_per_image", "peak_gb", "overhead_ratio",
                                         "rel_err_vs_bf16", "compile_s", "note") if row.get(k) is not None}  # fmt: skip
        print("ROW", json.dumps(shown, default=_jsonable), flush=True)
        return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", flush=True)


# ---- timing helpers -----------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / GB, 2) if device.type == "cuda" else None


def allocated_gb(device: torch.device) -> float | None:
    return round(torch.cuda.memory_allocated(device) / GB, 2) if device.type == "cuda" else None


def wall(fn, device: torch.device) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def step_times(fn, device: torch.device, warmup: int = 1, reps: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t, _ = wall(fn, device)
            times.append(t)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "reps": reps}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).norm() / ref.norm())


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def over_budget(args: argparse.Namespace, reserve_s: float = 0.0) -> bool:
    return time.perf_counter() - STARTED + reserve_s > args.time_budget_s


# ---- suite: one FLUX.2 transformer step ---------------------------------------------------------


def flux2_inputs(transformer, device, width: int, height: int, text_tokens: int = 512, batch: int = 1) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1234)
    rows, cols = height // 16, width // 16
    cfg = transformer.config
    hid = torch.randn(batch, rows * cols, cfg.in_channels, generator=g)
    enc = torch.randn(batch, text_tokens, cfg.joint_attention_dim, generator=g)
    t = torch.arange(1)
    h, w, l = torch.arange(rows), torch.arange(cols), torch.arange(1)
    img_ids = torch.cartesian_prod(t, h, w, l).expand(batch, -1, -1)
    txt_ids = torch.cartesian_prod(t, torch.arange(1), torch.arange(1), torch.arange(text_tokens)).expand(batch, -1, -1)
    bf16 = torch.bfloat16
    return {
        "hidden_states": hid.to(device, bf16), "encoder_hidden_states": enc.to(device, bf16),
        "timestep": torch.full((batch,), 0.5, device=device, dtype=bf16),
        "guidance": torch.full((batch,), 4.0, device=device, dtype=torch.float32),
        "img_ids": img_ids.to(device), "txt_ids": txt_ids.to(device), "return_dict": False,
    }  # fmt: skip


def suite_flux2_step(args, rec: Recorder, device: torch.device) -> None:
    from flexy_worker import acceleration as acc

    width = height = 256 if args.tiny else 1024
    reps = 2 if args.tiny else args.reps
    base = {"engine": "flux2_dev_transformer", "width": width, "height": height, "tokens": (width // 16) * (height // 16) + 512}

    def measure(transformer, inputs, mode: str, weights: str, ref=None, extra=None, first_call_s=None):
        reset_peak(device)
        with torch.inference_mode():
            t = step_times(lambda: transformer(**inputs), device, warmup=1, reps=reps)
            out = transformer(**inputs)[0].float()
        fields = dict(base, mode=mode, weights=weights, s_per_step=round(t["median"], 4),
                      s_per_step_min=round(t["min"], 4), s_per_step_max=round(t["max"], 4), reps=t["reps"],
                      peak_gb=peak_gb(device), weights_gb=round(M.module_bytes(transformer) / GB, 2))  # fmt: skip
        if first_call_s is not None:
            fields["compile_s"] = round(first_call_s, 1)
        if ref is not None:
            fields["rel_err_vs_bf16"] = round(rel_err(out, ref), 5)
        fields["finite"] = bool(torch.isfinite(out).all())
        rec.row(**fields, **(extra or {}))
        return out, t["median"]

    def first_call(transformer, inputs) -> float:
        with torch.inference_mode():
            seconds, _ = wall(lambda: transformer(**inputs), device)
        return seconds

    log("building FLUX.2 transformer in bf16")
    transformer = M.flux2_transformer(device, "bf16", args.tiny)
    params = M.parameter_count(transformer)
    log(f"built: {params / 1e9:.3f} B parameters, {M.module_bytes(transformer) / GB:.1f} GB")
    inputs = flux2_inputs(transformer, device, width, height)
    ref, t_default = measure(transformer, inputs, "bf16 eager (sdpa default)", "bf16", extra={"parameters": params})
    best = (t_default, None)
    if args.only_fast:
        # The remaining variants only: FP8 row-wise with autotuned kernels, FP8 per-tensor
        if device.type == "cuda":
            acc.set_sdpa_backend("cudnn")
        acc.convert_to_fp8(transformer, "row")
        free(device)
        try:
            if not args.autotune:
                raise RuntimeError("skipped: --autotune not given")
            acc.compile_repeated_blocks(transformer, mode="max-autotune-no-cudagraphs")
            fc = first_call(transformer, inputs)
            measure(transformer, inputs, "fp8-row compile=max-autotune-no-cudagraphs sdpa=cudnn", "fp8 row-wise blocks",
                    ref=ref, first_call_s=fc)  # fmt: skip
        except Exception as exc:
            if args.autotune:
                rec.row(**base, mode="fp8-row compile=max-autotune-no-cudagraphs sdpa=cudnn", error=repr(exc)[:400])
        del transformer
        torch._dynamo.reset()
        free(device)
        transformer = M.flux2_transformer(device, "fp8-tensor", args.tiny)
        reset_peak(device)
        acc.compile_repeated_blocks(transformer)
        fc = first_call(transformer, inputs)
        measure(transformer, inputs, "fp8-tensor compile sdpa=cudnn", "fp8 per-tensor blocks", ref=ref, first_call_s=fc)
        return
    if device.type == "cuda":
        default_order = torch._C._get_sdp_priority_order()
        for name in ("cudnn", "flash", "efficient"):
            try:
                acc.set_sdpa_backend(name)
                _, t = measure(transformer, inputs, f"bf16 eager sdpa={name}", "bf16", ref=ref)
                if t < best[0]:
                    best = (t, name)
            except Exception as exc:
                rec.row(**base, mode=f"bf16 eager sdpa={name}", weights="bf16", error=repr(exc)[:300])
            finally:
                torch._C._set_sdp_priority_order(default_order)
    sdpa = best[1]
    if sdpa:
        acc.set_sdpa_backend(sdpa)
    tag = f" sdpa={sdpa}" if sdpa else ""
    log(f"fastest attention backend: {sdpa or 'default'}")

    # bf16 + regional compile
    acc.configure_compile_cache(args.compile_cache)
    if not args.tiny or args.compile_tiny:
        acc.compile_repeated_blocks(transformer)
        fc = first_call(transformer, inputs)
        measure(transformer, inputs, f"bf16 compile{tag}", "bf16", ref=ref, first_call_s=fc)

    # FP8 row-wise (from the same bf16 weights, converted in place) + compile, then eager
    log("converting blocks to FP8 row-wise")
    report = acc.convert_to_fp8(transformer, "row")
    free(device)
    compiled = not args.tiny or args.compile_tiny
    if compiled:
        fc = first_call(transformer, inputs)
        measure(transformer, inputs, f"fp8-row compile{tag}", "fp8 row-wise blocks", ref=ref, first_call_s=fc, extra=report)
    for block in acc.repeated_blocks(transformer):
        block._compiled_call_impl = None
    measure(transformer, inputs, f"fp8-row eager{tag}", "fp8 row-wise blocks", ref=ref)
    if compiled and args.autotune and not over_budget(args, 300):
        # Inductor's own FP8 GEMM templates, autotuned per shape, against the default kernels
        try:
            acc.compile_repeated_blocks(transformer, mode="max-autotune-no-cudagraphs")
            fc = first_call(transformer, inputs)
            measure(transformer, inputs, f"fp8-row compile=max-autotune-no-cudagraphs{tag}", "fp8 row-wise blocks",
                    ref=ref, first_call_s=fc)  # fmt: skip
        except Exception as exc:
            rec.row(**base, mode=f"fp8-row compile=max-autotune-no-cudagraphs{tag}", error=repr(exc)[:400])
        for block in acc.repeated_blocks(transformer):
            block._compiled_call_impl = None
    del transformer
    free(device)

    # NF4 as diffusers/FLUX.2-dev-bnb-4bit (same seeds: the same bf16 weights, quantized)
    if over_budget(args, 120):
        rec.row(**base, mode="nf4 (skipped)", note="time budget")
        return
    log("building FLUX.2 transformer in NF4 (bitsandbytes)")
    try:
        transformer = M.flux2_transformer(device, "nf4", args.tiny)
    except Exception as exc:
        rec.row(**base, mode="nf4 eager", error=repr(exc)[:300])
        return
    nf4_out, _ = measure(transformer, inputs, f"nf4 eager{tag}", "nf4 (bnb)", ref=ref)
    if compiled and not over_budget(args, 150):
        try:
            acc.compile_repeated_blocks(transformer)
            fc = first_call(transformer, inputs)
            measure(transformer, inputs, f"nf4 compile{tag}", "nf4 (bnb)", ref=ref, first_call_s=fc)
        except Exception as exc:
            rec.row(**base, mode=f"nf4 compile{tag}", error=repr(exc)[:300])
            for block in acc.repeated_blocks(transformer):
                block._compiled_call_impl = None
    # The 4-bit engine's fast path: NF4 dequantized once, re-quantized to FP8 row-wise
    if not over_budget(args, 100):
        report = acc.convert_to_fp8(transformer, "row")
        free(device)
        if compiled:
            for block in acc.repeated_blocks(transformer):
                block._compiled_call_impl = None
            acc.compile_repeated_blocks(transformer)
            fc = first_call(transformer, inputs)
        else:
            fc = None
        with torch.inference_mode():
            out = transformer(**inputs)[0].float()
        report["rel_err_vs_nf4"] = round(rel_err(out, nf4_out), 5)
        measure(transformer, inputs, f"nf4->fp8-row {'compile' if compiled else 'eager'}{tag}",
                "fp8 row-wise blocks from nf4", ref=ref, first_call_s=fc, extra=report)  # fmt: skip
    del transformer
    free(device)

    # FP8 per-tensor scales (cuBLAS' tensor-wise kernels) + compile
    if compiled and not over_budget(args, 120):
        log("building FLUX.2 transformer with FP8 per-tensor blocks")
        transformer = M.flux2_transformer(device, "fp8-tensor", args.tiny)
        acc.compile_repeated_blocks(transformer)
        fc = first_call(transformer, inputs)
        measure(transformer, inputs, f"fp8-tensor compile{tag}", "fp8 per-tensor blocks", ref=ref, first_call_s=fc)
        del transformer
        free(device)


# ---- the worker beside plain diffusers ----------------------------------------------------------


def make_manager(device: torch.device, budget_bytes: int, text_encoder_mode: str = "remote"):
    from flexy_worker.catalog import load_catalog
    from flexy_worker.engines.manager import EngineManager

    models_dir = Path(tempfile.mkdtemp(prefix="flexy-bench-models-"))
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    return EngineManager(load_catalog(), models_dir, device, dtype, budget_bytes, text_encoder_mode, remote_token="bench")


def register(manager, engine: str, pipeline, source: str = "local") -> None:
    """Hand a built pipeline to the manager as its _load would after from_pretrained: the same
    LoadedEngine record, residency attach and activation. The bench builds weights in memory
    instead of reading a snapshot; everything after loading is the manager's own code."""
    from flexy_worker.engines.adapters import adapter_for
    from flexy_worker.engines.manager import LoadedEngine

    spec = manager.catalog[engine]
    pipeline.set_progress_bar_config(disable=True)
    loaded = LoadedEngine(spec, manager.snapshot_path(engine), pipeline, adapter_for(spec), "random", "random-weights", None, source)
    manager._loaded[engine] = loaded
    for name, component in pipeline.components.items():
        if isinstance(component, torch.nn.Module):
            component.eval()
            manager.residency_manager.attach(engine, name, component, None)
    manager.residency_manager.activate(engine)


def patch_remote_encoder(manager, pipeline) -> None:
    """The remote FLUX.2 text encoder, answered instantly with embeddings of the real shape on the
    host (as fetch_prompt_embeds returns them); the adapter moves them to the device as in service."""
    embeds = M.remote_prompt_embeds(pipeline)
    manager.fetch_remote_prompt_embeds = lambda prompts, loaded: embeds.expand(len(prompts), -1, -1)


PROMPT = "a lighthouse at dawn, oil painting, detailed"
NEGATIVE = "blurry, low quality"


def request_for(manager, engine: str, steps: int | None = None, size: int | None = None, seed: int = 42, job: str = "bench"):
    from flexy_worker.engines.base import GenerateRequest

    spec = manager.catalog[engine]
    d = spec.defaults
    return GenerateRequest(job_id=job, engine=engine, prompt=PROMPT,
                           negative_prompt=NEGATIVE if spec.limits.negative_prompt else None, seed=seed,
                           steps=steps or d.steps, guidance=d.guidance, width=size or d.width, height=size or d.height)  # fmt: skip


def plain_kwargs(pipeline, request, remote_embeds: torch.Tensor | None) -> dict[str, Any]:
    """What a plain diffusers call with the same settings looks like."""
    kwargs: dict[str, Any] = dict(width=request.width, height=request.height, num_inference_steps=request.steps,
                                  guidance_scale=float(request.guidance), num_images_per_prompt=1, output_type="np",
                                  generator=torch.Generator(device="cpu").manual_seed(request.seed))  # fmt: skip
    if remote_embeds is not None:
        kwargs["prompt_embeds"] = remote_embeds
    else:
        kwargs["prompt"] = request.prompt
        if request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
    return kwargs


class StepClock:
    def __init__(self):
        self.times: list[float] = []

    def __call__(self, event) -> None:
        self.times.append(time.perf_counter())

    def median_interval(self) -> float | None:
        gaps = [b - a for a, b in zip(self.times, self.times[1:])]
        return statistics.median(gaps) if gaps else None


def to_rgb8(images):
    from flexy_worker.engines.manager import to_rgb8 as worker_to_rgb8

    return worker_to_rgb8(images)


def image_diff(a, b) -> dict[str, float]:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return {"mean_abs_diff_u8": round(float(np.abs(a - b).mean()), 3),
            "psnr_db": round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else None}  # fmt: skip


def bench_engine(args, rec: Recorder, device: torch.device, engine: str, fast_paths: list[str], cache: float | None,
                 side_by_side: bool = False, reps: int = 2) -> None:  # fmt: skip
    from flexy_worker import acceleration as acc

    size = 256 if args.tiny else None
    steps = 3 if args.tiny else None
    log(f"building {engine}")
    built, pipeline = wall(lambda: M.build_pipeline(engine, device, tiny=args.tiny), device)
    source = "remote" if engine == "flux2_dev_4bit" else "local"
    manager = make_manager(device, budget_bytes=int(1e12), text_encoder_mode=source if engine == "flux2_dev_4bit" else "auto")
    register(manager, engine, pipeline, source)
    embeds = None
    if engine == "flux2_dev_4bit":
        patch_remote_encoder(manager, pipeline)
        embeds = M.remote_prompt_embeds(pipeline, device=device)
    request = request_for(manager, engine, steps, size)
    weights_gb = round(manager.residency_manager.engine_bytes(engine) / GB, 2)
    base = {"engine": engine, "width": request.width, "height": request.height, "steps": request.steps,
            "guidance": request.guidance, "cfg": bool(manager.catalog[engine].limits.negative_prompt),
            "resident_gb": weights_gb, "build_s": round(built, 1)}  # fmt: skip
    if engine == "flux2_dev_4bit":
        base["text_encoder"] = "remote (random embeddings of shape (1, 512, 15360))"
    log(f"{engine}: {weights_gb} GB resident; warm-up")
    with torch.inference_mode():
        warm_kwargs = plain_kwargs(pipeline, request, embeds)
        if engine == "flux2_dev_4bit":
            warm_kwargs["num_inference_steps"] = 2  # 16 s an image: a short warm-up
        pipeline(**warm_kwargs)
    reps = max(reps, args.pipe_reps_small) if engine != "flux2_dev_4bit" else reps

    def worker_run():
        clock = StepClock()
        seconds, output = wall(lambda: manager.generate(request, clock, lambda: False), device)
        return seconds, output, clock

    def plain_run():
        with torch.inference_mode():
            return wall(lambda: pipeline(**plain_kwargs(pipeline, request, embeds)), device)

    plain_s, worker_s, phases, clocks = [], [], [], []
    reset_peak(device)
    images = {}
    for index in range(reps):  # ABBA order, so drift in clocks or temperature cancels
        for which in (("plain", "worker") if index % 2 == 0 else ("worker", "plain")):
            if which == "plain":
                seconds, out = plain_run()
                plain_s.append(seconds)
                images["diffusers"] = to_rgb8(out.images)[0]
            else:
                seconds, out, clock = worker_run()
                worker_s.append(seconds)
                phases.append(out.timings)
                clocks.append(clock)
                images["worker"] = out.images[0]
    peak = peak_gb(device)
    plain_med, worker_med = statistics.median(plain_s), statistics.median(worker_s)
    enc = statistics.median(p["text_encode_ms"] for p in phases) / 1000
    dec = statistics.median(p["decode_ms"] for p in phases) / 1000
    step = statistics.median(c.median_interval() or 0 for c in clocks)
    rec.row(**base, mode="diffusers pipe()", s_per_image=round(plain_med, 3),
            s_per_step=round((plain_med - enc - dec) / request.steps, 4), s_per_step_source="(s_per_image - worker's encode and decode) / steps",
            runs_s=[round(s, 3) for s in plain_s], peak_gb=peak)  # fmt: skip
    rec.row(**base, mode="worker generate()", s_per_image=round(worker_med, 3), s_per_step=round(step, 4),
            s_per_step_source="median interval between the worker's step events",
            runs_s=[round(s, 3) for s in worker_s], overhead_ratio=round(worker_med / plain_med, 4),
            phases_ms={k: statistics.median(p[k] for p in phases) for k in phases[0]}, peak_gb=peak,
            worker_matches_diffusers=image_diff(images["worker"], images["diffusers"]))  # fmt: skip
    baseline_image, baseline_s = images["worker"], worker_med

    last_image, last_s = baseline_image, baseline_s
    for opts in fast_paths:
        if over_budget(args, 90):
            rec.row(**base, mode=f"fast:{opts} (skipped)", note="time budget")
            continue
        try:
            path = acc.parse_options(opts)
            report = acc.apply_fast_path(pipeline, path, engine, device)
            free(device)
            manager.residency_manager.attach(engine, "transformer" if hasattr(pipeline, "transformer") else "unet",
                                             acc.denoiser_of(pipeline), None)  # fmt: skip  (re-count bytes)
            spec = manager.catalog[engine]
            warm_s = acc.warm_up(pipeline, request.width, request.height, negative=bool(request.negative_prompt),
                                 guidance=request.guidance) / 1000  # fmt: skip
            warm2_s = acc.warm_up(pipeline, request.width, request.height, negative=bool(request.negative_prompt),
                                  guidance=request.guidance) / 1000  # fmt: skip
            reset_peak(device)
            runs, outs, fast_clocks = [], [], []
            for _ in range(reps):
                seconds, out, clock = worker_run()
                runs.append(seconds)
                outs.append(out)
                fast_clocks.append(clock)
            med = statistics.median(runs)
            rec.row(**base, mode=f"worker generate() fast:{report.applied}", s_per_image=round(med, 3),
                    s_per_step=round(statistics.median(c.median_interval() or 0 for c in fast_clocks), 4),
                    runs_s=[round(s, 3) for s in runs], peak_gb=peak_gb(device),
                    resident_gb_fast=round(manager.residency_manager.engine_bytes(engine) / GB, 2),
                    speedup_vs_worker_baseline=round(baseline_s / med, 3), overhead_ratio_vs_plain_baseline=round(med / plain_med, 4),
                    warm_up_s=round(warm_s, 1), warm_up_again_s=round(warm2_s, 2), compile_s=round(warm_s - warm2_s, 1),
                    apply_s=round(report.apply_ms / 1000, 2), fast_path=report.as_dict(), allocated_gb=allocated_gb(device),
                    image_vs_baseline=image_diff(outs[-1].images[0], baseline_image))  # fmt: skip
            last_image, last_s = outs[-1].images[0], med
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(**base, mode=f"worker generate() fast:{opts}", error=repr(exc)[:400])
    if side_by_side:
        save_side_by_side(baseline_image, last_image, engine)
    for threshold in cache or []:
        if over_budget(args, 40):
            break
        try:
            denoiser = acc.denoiser_of(pipeline)
            ok = acc.enable_step_cache(denoiser, threshold)
            if ok:
                before = dict(acc.step_cache_stats(pipeline))
                seconds, out, clock = worker_run()
                after = acc.step_cache_stats(pipeline)
                stats = {k: after[k] - before.get(k, 0) for k in after}
                rec.row(**base, mode=f"worker generate() fast + step cache {threshold:g}", s_per_image=round(seconds, 3),
                        s_per_step=round(((out.timings["denoise_ms"]) / 1000) / request.steps, 4),
                        s_per_step_source="denoise time / steps (skipped steps included)",
                        peak_gb=peak_gb(device), speedup_vs_fast=round(last_s / seconds, 3), cache_stats=stats,
                        image_vs_fast=image_diff(out.images[0], last_image),
                        image_vs_baseline=image_diff(out.images[0], baseline_image))  # fmt: skip
        except Exception as exc:
            rec.row(**base, mode=f"step cache {threshold:g}", error=repr(exc)[:400])
    manager.unload()
    del pipeline, manager
    free(device)


def save_side_by_side(left, right, engine: str) -> None:
    import numpy as np
    from PIL import Image

    out_dir = Path(os.environ.get("OUT") or ROOT / "bench" / "results")
    a, b = (Image.fromarray(x).resize((512, 512), Image.BILINEAR) for x in (left, right))
    diff = np.clip(np.abs(np.asarray(left, dtype=np.int16) - np.asarray(right, dtype=np.int16)) * 4, 0, 255).astype(np.uint8)
    d = Image.fromarray(diff).resize((512, 512), Image.BILINEAR)
    canvas = Image.new("RGB", (1536, 512))
    for i, im in enumerate((a, b, d)):
        canvas.paste(im, (512 * i, 0))
    path = out_dir / f"side_by_side_{engine}.png"
    canvas.save(path)
    log(f"saved {path} (left: baseline, middle: fast path, right: |difference| x4)")


def best_step_variant(rows: list[dict[str, Any]], max_err: float = 0.02) -> str | None:
    """The fastest fast path measured on the FLUX.2 transformer step in this process (flux2-fast or
    flux2-libs ran first) whose error against bf16 is under max_err: its applied options."""
    fit = [r for r in rows if r.get("engine") == "flux2_dev_transformer" and r.get("fast_path_applied")
           and r.get("s_per_step") and r.get("rel_err_vs_bf16") is not None and r["rel_err_vs_bf16"] < max_err]  # fmt: skip
    return min(fit, key=lambda r: r["s_per_step"])["fast_path_applied"] if fit else None


def rows_of_this_run(rec: Recorder) -> list[dict[str, Any]]:
    """This process's rows and those an earlier suite of the same command wrote (run_all.sh runs
    each suite in its own process) with the same commit in the last three hours."""
    rows = list(rec.rows)
    horizon = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    for path in filter(None, (rec.out, rec.path)):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                fresh = dt.datetime.fromisoformat(row["date"]) >= horizon
            except (ValueError, KeyError):
                continue
            if fresh and row.get("command") == rec.command and row.get("commit") == rec.common.get("commit"):
                rows.append(row)
        break  # $OUT's copy when there is one, else the results file
    return rows


def pipeline_fast_paths(wanted: list[str], rows: list[dict[str, Any]], device: torch.device) -> list[str]:
    """The pipe-flux2 fast paths in order, 'best' replaced by best_step_variant and repeats (after
    resolving presets on this device) dropped."""
    from flexy_worker import acceleration as acc

    chosen, seen = [], set()
    for opts in wanted:
        if opts == "best":
            opts = best_step_variant(rows)
            if opts is None:
                log("no step variant measured in this process: 'best' skipped")
                continue
            log(f"best step variant of this run: {opts}")
        key = acc.parse_options(opts).resolve(device).describe()
        if key not in seen:
            seen.add(key)
            chosen.append(opts)
    return chosen


def suite_pipe_flux2(args, rec, device) -> None:
    wanted = args.flux2_fast or ["compile+sdpa=cudnn", "fp8+compile+sdpa=cudnn"]
    bench_engine(args, rec, device, "flux2_dev_4bit", pipeline_fast_paths(wanted, rows_of_this_run(rec), device), cache=args.cache,
                 side_by_side=True, reps=args.pipe_reps)  # fmt: skip


def suite_pipe_others(args, rec, device) -> None:
    for engine in args.engines or ("flux1_dev", "sd3_medium", "realvis_xl"):
        if over_budget(args, 120):
            rec.row(engine=engine, mode="(skipped)", note="time budget")
            continue
        try:
            bench_engine(args, rec, device, engine, ["compile+sdpa=cudnn", "fp8+compile+sdpa=cudnn"],
                         cache=args.cache if engine != "realvis_xl" else None, reps=args.pipe_reps)  # fmt: skip
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(engine=engine, mode="pipeline", error=repr(exc)[:400])
            free(device)


# ---- suite: residency ---------------------------------------------------------------------------


def h2d_bandwidth(device: torch.device, nbytes: int) -> dict[str, float]:
    host_pinned = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    host_pageable = torch.empty(nbytes, dtype=torch.uint8)
    host_pageable.fill_(1)
    host_pinned.fill_(1)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    result = {}
    for name, src in (("pinned", host_pinned), ("pageable", host_pageable)):
        times = []
        for _ in range(3):
            seconds, _ = wall(lambda: dev.copy_(src, non_blocking=name == "pinned"), device)
            times.append(seconds)
        result[f"h2d_{name}_gb_s"] = round(nbytes / min(times) / GB, 2)
    times = []
    for _ in range(3):
        seconds, _ = wall(lambda: host_pinned.copy_(dev, non_blocking=True), device)
        times.append(seconds)
    result["d2h_pinned_gb_s"] = round(nbytes / min(times) / GB, 2)
    del host_pinned, host_pageable, dev
    return result


def suite_residency(args, rec: Recorder, device: torch.device) -> None:
    from flexy_worker import acceleration as acc

    cuda = device.type == "cuda"
    parts = set(args.parts or ("bandwidth", "local-te", "coresident", "compile-cache"))
    if args.skip_local_te:
        parts.discard("local-te")
    bw: dict = {}
    if cuda and parts & {"bandwidth", "coresident"}:
        nbytes = (256 << 20) if args.tiny else (4 << 30)
        try:
            bw = h2d_bandwidth(device, nbytes)
            rec.row(engine="-", mode="host-to-device bandwidth", bytes=nbytes, **bw)
        except Exception as exc:  # the other parts still run (swap-ins then go without a reference)
            rec.row(engine="-", mode="host-to-device bandwidth", error=repr(exc)[:400])
        free(device)
    steps = 2 if args.tiny else 4
    size = 256 if args.tiny else None

    # FLUX.2 with the local NF4 text encoder: peak memory of the whole engine
    if "local-te" in parts:
        try:
            log("building FLUX.2 with the local NF4 text encoder")
            pipeline = M.build_pipeline("flux2_dev_4bit", device, tiny=args.tiny, text_encoder="local")
            manager = make_manager(device, int(1e12), "local")
            register(manager, "flux2_dev_4bit", pipeline, "local")
            comp = {name: round(M.module_bytes(c) / GB, 2) for name, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}
            request = request_for(manager, "flux2_dev_4bit", steps, size)
            manager.generate(request, lambda e: None, lambda: False)
            reset_peak(device)
            seconds, out = wall(lambda: manager.generate(request, lambda e: None, lambda: False), device)
            rec.row(engine="flux2_dev_4bit", mode="loaded: NF4 transformer + local NF4 text encoder", steps=steps,
                    width=request.width, height=request.height, s_per_image=round(seconds, 3), peak_gb=peak_gb(device),
                    resident_gb=round(manager.residency_manager.engine_bytes("flux2_dev_4bit") / GB, 2), components_gb=comp,
                    phases_ms=out.timings)  # fmt: skip
            manager.unload()
            del pipeline, manager
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(engine="flux2_dev_4bit", mode="loaded: local NF4 text encoder", error=repr(exc)[:400])
        free(device)

    # Three engines under a 32 GB cap
    if "coresident" in parts and not over_budget(args, 200):
        try:
            coresident(args, rec, device, bw, steps, size)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(mode="coresident", error=repr(exc)[:400])
        free(device)
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, device.index or 0)

    # Compile cost in a fresh process, then in a restarted one with the same cache folder
    if "compile-cache" in parts and not over_budget(args, 150):
        cache_dir = tempfile.mkdtemp(prefix="flexy-compile-cache-")
        for label in ("cold cache (first start)", "warm cache (restart)"):
            if over_budget(args, 60):
                break
            cmd = [sys.executable, str(HERE / "bench.py"), "--suite", "compile-child", "--compile-cache", cache_dir]
            if args.tiny:
                cmd.append("--tiny")
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60, min(3600, args.time_budget_s - (time.perf_counter() - STARTED))))
            total = time.perf_counter() - started
            child = {}
            for line in proc.stdout.splitlines():
                if line.startswith("CHILD "):
                    child = json.loads(line[6:])
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-3000:])
            rec.row(engine="flux1_dev_transformer", mode=f"fast path start-up, {label}", process_s=round(total, 1),
                    returncode=proc.returncode, compile_cache=cache_dir, **child)  # fmt: skip


def coresident(args, rec: Recorder, device: torch.device, bw: dict, steps: int, size: int | None) -> None:
    from flexy_worker import acceleration as acc

    cap_gb = 32
    cuda = device.type == "cuda"
    if cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(cap_gb * 1024**3 / total, device.index or 0)
    reserve_gb = 6  # activations, VAE decode and allocator slack at 1024x1024
    budget = (cap_gb - reserve_gb) * 1024**3
    manager = make_manager(device, budget, "remote")
    estimates = {"flux2_dev_4bit": 18.5e9, "flux1_dev": 22.5e9, "sd3_medium": 16e9}
    for engine in estimates:
        manager.residency_manager.reserve(int(estimates[engine]) if not args.tiny else 0)
        log(f"coresident: building {engine}")
        convert = M.fp8_converter("row", M.in_repeated_blocks) if engine == "flux1_dev" else None
        pipeline = M.build_pipeline(engine, device, tiny=args.tiny, transformer_convert=convert)
        register(manager, engine, pipeline, "remote" if engine == "flux2_dev_4bit" else "local")
        if engine == "flux2_dev_4bit":
            patch_remote_encoder(manager, pipeline)
    sizes = {e: round(manager.residency_manager.engine_bytes(e) / GB, 2) for e in estimates}
    if args.tiny:
        # Tiny engines all fit 26 GiB: a budget of about one engine makes the run evict and swap, and
        # on the CPU the flat-buffer copies are switched on so that their code path runs too.
        manager.residency_manager.budget_bytes = int(max(manager.residency_manager.engine_bytes(e) for e in estimates) * 1.3)
        manager.residency_manager.flat_buffers = True
        manager.residency_manager.evict_all()
    loads = {"n": 0}
    real_load = manager._load

    def counting_load(engine):
        loads["n"] += 1
        return real_load(engine)

    manager._load = counting_load
    rm = manager.residency_manager
    moves: list[dict[str, Any]] = []
    real_move = rm._move

    def timed_move(component, location):
        sync(device)
        begun = time.perf_counter()
        real_move(component, location)
        sync(device)
        how = rm.last_move or {}
        moves.append({"to": location, "gb": component.nbytes / GB, "s": time.perf_counter() - begun, "key": component.key,
                      "path": how.get("path"), "copies": how.get("copies"), "new_host_buffer": how.get("new_host_buffer"),
                      "pinned": how.get("pinned")})  # fmt: skip

    rm._move = timed_move
    sequence = ["flux1_dev", "sd3_medium", "flux2_dev_4bit", "sd3_medium", "flux1_dev", "flux2_dev_4bit",
                "flux1_dev", "sd3_medium", "flux2_dev_4bit", "flux2_dev_4bit"]  # fmt: skip
    log("coresident: warm-up, one request each")
    for engine in estimates:
        manager.generate(request_for(manager, engine, steps, size, job="warm"), lambda e: None, lambda: False)
    loads_after_warmup = loads["n"]
    evictions_before = rm.evictions
    reset_peak(device)
    served, swaps = [], []
    started = time.perf_counter()
    for index, engine in enumerate(sequence):
        was_resident = rm.location_of(engine) == "device"
        nbytes = rm.engine_bytes(engine)
        host_bytes = sum(c.nbytes for c in rm.components_of(engine).values() if c.location != "device")
        seconds, out = wall(lambda: manager.generate(request_for(manager, engine, steps, size, job=f"mix-{index}"),
                                                     lambda e: None, lambda: False), device)  # fmt: skip
        load_s = out.timings["load_ms"] / 1000
        entry = {"engine": engine, "s": round(seconds, 3), "load_s": round(load_s, 3), "was_resident": was_resident}
        if not was_resident and load_s > 0:
            entry["swapped_in_gb"] = round(host_bytes / GB, 2)
            entry["swap_in_gb_s"] = round(host_bytes / load_s / GB, 2)
            swaps.append(entry)
        served.append(entry)
    elapsed = time.perf_counter() - started
    summary = move_summary(moves, bw.get("h2d_pinned_gb_s"), 0.0 if args.tiny else 0.05)
    rec.row(mode="coresident", budget_gb=cap_gb, engines=list(estimates), cap="torch.cuda.set_per_process_memory_fraction",
            residency_budget_gb=cap_gb - reserve_gb, requests=len(sequence), steps=steps,
            width=size or 1024, height=size or 1024, disk_reloads_after_warmup=loads["n"] - loads_after_warmup,
            loads_during_warmup=loads_after_warmup, evictions=rm.evictions - evictions_before, swaps_in=len(swaps),
            peak_gb=peak_gb(device), engine_gb=sizes, flux1_dev_transformer="fp8 row-wise blocks (fast path)",
            residency_moves="flat buffers" if rm.flat_buffers else "per tensor", **summary,
            elapsed_s=round(elapsed, 1), served=served)  # fmt: skip
    manager.unload()
    del manager


def move_summary(moves: list[dict[str, Any]], pinned: float | None, min_gb: float) -> dict[str, Any]:
    """Swap-ins and evictions of the coresident run against the card's pinned host-to-device copy:
    per component (every swap-in's GB/s and its share of the pinned copy), overall, and evictions
    split into first ones (host buffer allocated and pinned) and later ones (buffer reused)."""

    def rate(ms: list[dict[str, Any]]) -> tuple[float, float, float | None]:
        gb, s = sum(m["gb"] for m in ms), sum(m["s"] for m in ms)
        return round(gb, 2), round(s, 3), round(gb / s, 2) if s else None

    ins = [m for m in moves if m["to"] == "device" and m["gb"] > min_gb]
    outs = [m for m in moves if m["to"] != "device" and m["gb"] > min_gb]
    by_component: dict[str, dict[str, Any]] = {}
    for m in ins:
        entry = by_component.setdefault(m["key"].split(":", 1)[-1], {"gb": round(m["gb"], 3), "gb_s": [], "copies": []})
        entry["gb_s"].append(round(m["gb"] / m["s"], 2))
        entry["copies"].append(m["copies"])
    for entry in by_component.values():
        entry["vs_h2d"] = [round(r / pinned, 3) for r in entry["gb_s"]] if pinned else None
    in_gb, in_s, in_rate = rate(ins)
    out_gb, out_s, out_rate = rate(outs)
    paths: dict[str, int] = {}
    for m in moves:
        paths[f"{m['to']}:{m['path']}"] = paths.get(f"{m['to']}:{m['path']}", 0) + 1
    vs = round(in_rate / pinned, 3) if in_rate and pinned else None
    return {
        "h2d_pinned_gb_s": pinned, "swap_in_gb": in_gb, "swap_in_s": in_s, "swap_in_gb_s": in_rate,
        "swap_in_vs_h2d": vs, "swap_in_target_met": vs >= 0.7 if vs is not None else None,
        "swap_in_by_component": by_component,
        "evict_gb": out_gb, "evict_s": out_s, "evict_gb_s": out_rate,
        "evict_first_gb_s": rate([m for m in outs if m["new_host_buffer"]])[2],
        "evict_reused_gb_s": rate([m for m in outs if not m["new_host_buffer"]])[2],
        "evict_pinned": all(m["pinned"] for m in outs) if outs else None,
        "moves_by_path": paths,
    }  # fmt: skip


def suite_compile_child(args, rec, device) -> None:
    """One process start: build the FLUX.1 transformer with its fast path, compile, first step."""
    from flexy_worker import acceleration as acc

    t0 = time.perf_counter()
    acc.configure_compile_cache(args.compile_cache)
    import diffusers  # noqa: F401

    imported = time.perf_counter() - t0
    transformer = M.build("flux1_dev_transformer", device, tiny=args.tiny, convert=M.fp8_converter("row", M.in_repeated_blocks))
    built = time.perf_counter() - t0 - imported

    class Pipe:
        pass

    pipe = Pipe()
    pipe.transformer = transformer
    report = acc.apply_fast_path(pipe, acc.parse_options("compile+sdpa=cudnn" if device.type == "cuda" else "compile"), "flux1_dev", device)
    size = 256 if args.tiny else 1024
    g = torch.Generator().manual_seed(0)
    tokens = (size // 16) ** 2
    cfg = transformer.config
    inputs = {
        "hidden_states": torch.randn(1, tokens, cfg.in_channels, generator=g).to(device, torch.bfloat16),
        "encoder_hidden_states": torch.randn(1, 512, cfg.joint_attention_dim, generator=g).to(device, torch.bfloat16),
        "pooled_projections": torch.randn(1, cfg.pooled_projection_dim, generator=g).to(device, torch.bfloat16),
        "timestep": torch.full((1,), 0.5, device=device, dtype=torch.bfloat16),
        "guidance": torch.full((1,), 3.5, device=device, dtype=torch.float32),
        "img_ids": torch.zeros(tokens, 3, device=device), "txt_ids": torch.zeros(512, 3, device=device),
        "return_dict": False,
    }  # fmt: skip
    with torch.inference_mode():
        first, _ = wall(lambda: transformer(**inputs), device)
        t = step_times(lambda: transformer(**inputs), device, warmup=1, reps=3)
    print("CHILD " + json.dumps({"import_s": round(imported, 1), "build_s": round(built, 1), "first_step_s": round(first, 1),
                                 "s_per_step": round(t["median"], 4), "compile_s": round(first - t["median"], 1),
                                 "fast_path": report.applied}), flush=True)  # fmt: skip


def suite_flux2_profile(args, rec: Recorder, device: torch.device) -> None:
    """Where the FP8 fast path's step goes: device time by kernel kind (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from flexy_worker import acceleration as acc

    width = height = 256 if args.tiny else 1024
    transformer = M.flux2_transformer(device, "fp8-row", args.tiny)
    if device.type == "cuda":
        acc.set_sdpa_backend("cudnn")
    acc.compile_repeated_blocks(transformer)
    inputs = flux2_inputs(transformer, device, width, height)
    with torch.inference_mode():
        for _ in range(3):
            transformer(**inputs)
        sync(device)
        steps = 2
        with profile(activities=[ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                transformer(**inputs)
            sync(device)
    kinds: dict[str, float] = {}
    top: dict[str, float] = {}
    for evt in prof.key_averages():
        us = getattr(evt, "device_time_total", 0) or getattr(evt, "cuda_time_total", 0) or 0
        if us <= 0 or evt.key.startswith("ProfilerStep"):
            continue
        name = evt.key.lower()
        if any(k in name for k in ("fmha", "flash", "cudnn", "attention", "sdpa", "generated_fprop")):
            kind = "attention"
        elif any(k in name for k in ("gemm", "cutlass", "xmma", "nvjet", "scaled_mm", "f8f8", "sm90_")):
            kind = "gemm"
        elif name.startswith("triton"):
            kind = "fused elementwise/reductions (triton)"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e6 / steps
        top[evt.key[:120]] = us / 1e6 / steps
    total = sum(kinds.values())
    rec.row(engine="flux2_dev_transformer", mode="fp8-row compile sdpa=cudnn: device time by kernel kind", width=width,
            height=height, s_per_step=round(total, 4), device_s_per_step_by_kind={k: round(v, 4) for k, v in kinds.items()},
            top_kernels_s={k: round(v, 4) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]})  # fmt: skip


def suite_hook_check(args, rec: Recorder, device: torch.device) -> None:
    """The fast path through the engine manager's own load path (from_pretrained of the tiny demo
    snapshots, FLEXY_FAST_PATH="*:fast"): applied, warmed up, then a generate. Checks the wiring on
    the GPU; the demo models are tiny, so the times say nothing about speed."""
    from flexy_worker import acceleration as acc
    from flexy_worker.catalog import load_catalog
    from flexy_worker.demo_snapshots import build_all
    from flexy_worker.engines.manager import EngineManager

    fast_path_env = args.fast_path_env or "*:fast"
    models_dir = Path(tempfile.mkdtemp(prefix="flexy-demo-"))
    catalog = load_catalog()
    build_all(models_dir, catalog=catalog)
    manager = EngineManager(catalog, models_dir, device, "bfloat16" if device.type == "cuda" else "float32", int(1e12), "local",
                            fast_paths=acc.parse_fast_path(fast_path_env))  # fmt: skip
    for engine in catalog.ids():
        try:
            load_s, _ = wall(lambda: manager.load(engine), device)
            pipeline = manager.loaded(engine).pipeline
            denoiser = acc.denoiser_of(pipeline)
            fp8 = sum(1 for m in denoiser.modules() if type(m).__name__ == "FP8Linear")
            compiled = sum(1 for m in denoiser.modules() if getattr(m, "_compiled_call_impl", None) is not None)
            seconds, out = wall(lambda: manager.generate(request_for(manager, engine, steps=4, size=256), lambda e: None,
                                                         lambda: False), device)  # fmt: skip
            rec.row(engine=engine, mode="fast path via EngineManager.load (demo snapshot)", fast_path_env=fast_path_env,
                    load_with_warm_up_s=round(load_s, 2), generate_s=round(seconds, 3), fp8_layers=fp8, compiled_blocks=compiled,
                    image_shape=list(out.images[0].shape), note="tiny demo weights: a wiring check, not a speed figure")  # fmt: skip
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(engine=engine, mode="fast path via EngineManager.load (demo snapshot)", error=repr(exc)[:400])
    manager.unload()


def suite_flux2_fast(args, rec: Recorder, device: torch.device) -> None:
    """The levers past the FP8 fast path, in one command (about 5-6 minutes on an H100 or H200).
    First the attention microbench (suite flux2-fast-attn) in a child process, so that a Triton
    compiler crash costs its rows only: cuDNN SDPA in bf16 against the Triton kernels of
    flexy_worker.fp8_attention at FLUX.2's shape. Then one FLUX.2 transformer step at 1024x1024:
    bf16 eager (the reference output), the fast path as it is (fp8 + compile + sdpa=cudnn: the
    same-run baseline), + accum=fast, + attn=fp8, both, and the int8/bf16 variants of the attention
    (only the modes that worked in the microbench); --fast-variants names other variants instead. The
    model is converted to FP8 once per granularity (rebuilt from bf16 when it changes); each variant
    goes through acceleration.apply_fast_path (which drops the compiled code and recompiles).
    Every variant records a row or an error row."""
    import traceback
    from types import SimpleNamespace

    from flexy_worker import acceleration as acc
    from flexy_worker import fp8_attention as fa

    suite_started = time.perf_counter()
    model_budget_s = args.variants_budget_s  # no model variant starts after this (default: ends within ~7-8 minutes)

    # ---- attention alone, in a child process: learn something even if the model rows fail ----
    working: dict[str, list[tuple[float, str]]] = {}  # mode -> [(ms, loader)] that ran and were right
    if args.skip_attention_bench:
        log("attention microbench skipped (--skip-attention-bench): no attn= variant will run")
    else:
        working = _flux2_attention_microbench(args, rec)
    free(device)
    _flux2_fast_variants(args, rec, device, working, suite_started, model_budget_s)


def _flux2_attention_microbench(args, rec: Recorder) -> dict[str, list[tuple[float, str]]]:
    import traceback

    cmd = [sys.executable, str(HERE / "bench.py"), "--suite", "flux2-fast-attn", "--command", rec.command]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--results", args.results] if args.results else []
    cmd += ["--device", args.device] if args.device else []
    log("attention microbench (child process): " + " ".join(cmd[1:4]))
    working: dict[str, list[tuple[float, str]]] = {}  # mode -> [(ms, loader)] that ran and were right
    try:
        import threading

        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(300, proc.kill)  # a hung child must not eat the model rows' time
        watchdog.start()
        for line in proc.stdout:
            print("  | " + line.rstrip(), flush=True)
            if line.startswith("ATTN_OK "):
                ok = json.loads(line[8:])
                working.setdefault(ok["mode"], []).append((ok["ms"], ok["loader"]))
        rc = proc.wait(timeout=60)
        watchdog.cancel()
        if rc != 0:  # a crash (a compiler abort, say) after some kernels were already measured
            rec.row(engine="attention", mode="attention microbench (child process)", error=f"exit code {rc}", returncode=rc)
    except Exception as exc:
        traceback.print_exc()
        rec.row(engine="attention", mode="attention microbench (child process)", error=repr(exc)[:400])
    log(f"attention kernels that worked (mode: [(ms, loader)]): {working}")
    return working


def _flux2_fast_variants(args, rec: Recorder, device: torch.device, working: dict, suite_started: float,
                         model_budget_s: float) -> None:  # fmt: skip
    """One FLUX.2 transformer step per fast-path variant, against bf16 eager and the first variant."""
    import traceback
    from types import SimpleNamespace

    from flexy_worker import acceleration as acc
    from flexy_worker import fp8_attention as fa

    # ---- one FLUX.2 transformer step ----
    width = height = 256 if args.tiny else 1024
    reps = 2 if args.tiny else args.reps
    base = {"engine": "flux2_dev_transformer", "width": width, "height": height, "tokens": (width // 16) * (height // 16) + 512}
    compiled = not args.tiny or args.compile_tiny
    outputs: dict[str, Any] = {}

    def measure(transformer, inputs, mode: str, ref=None, extra=None, first_call_s=None):
        reset_peak(device)
        with torch.inference_mode():
            t = step_times(lambda: transformer(**inputs), device, warmup=1, reps=reps)
            out = transformer(**inputs)[0].float()
        fields = dict(base, mode=mode, s_per_step=round(t["median"], 4), s_per_step_min=round(t["min"], 4),
                      s_per_step_max=round(t["max"], 4), reps=t["reps"], peak_gb=peak_gb(device),
                      weights_gb=round(M.module_bytes(transformer) / GB, 2))  # fmt: skip
        if first_call_s is not None:
            fields["compile_s"] = round(first_call_s, 1)
        if ref is not None:
            fields["rel_err_vs_bf16"] = round(rel_err(out, ref), 5)
        if "baseline" in outputs:
            fields["rel_err_vs_fp8_baseline"] = round(rel_err(out, outputs["baseline"][0]), 5)
            fields["speedup_vs_baseline"] = round(outputs["baseline"][1] / t["median"], 4)
        fields["finite"] = bool(torch.isfinite(out).all())
        rec.row(**fields, **(extra or {}))
        return out, t["median"]

    log("building FLUX.2 transformer in bf16")
    transformer = M.flux2_transformer(device, "bf16", args.tiny)
    inputs = flux2_inputs(transformer, device, width, height)
    ref, _ = measure(transformer, inputs, "bf16 eager (sdpa default)")
    pipe = SimpleNamespace(transformer=transformer)
    variants = [(v, "baseline" if i == 0 else None) for i, v in enumerate(args.fast_variants.split(";"))] if args.fast_variants else [
        ("fp8+compile+sdpa=cudnn", "baseline"),
        ("fp8+accum=fast+compile+sdpa=cudnn", None),
        ("fp8+attn=fp8+compile+sdpa=cudnn", None),
        ("fp8+accum=fast+attn=fp8+compile+sdpa=cudnn", None),
        ("fp8+accum=fast+attn=int8+compile+sdpa=cudnn", None),
        ("fp8+accum=fast+attn=int8qk+compile+sdpa=cudnn", None),
        ("fp8+accum=fast+attn=fp8qk+compile+sdpa=cudnn", None),
    ]
    converted: str | None = None  # the FP8 granularity the weights were converted to
    for options, role in variants:
        if not compiled:
            options = "+".join(part for part in options.split("+") if not part.startswith("compile")) or "off"
        label = f"fast path {options}" + (" (same-run baseline)" if role == "baseline" else "")
        if time.perf_counter() - suite_started > model_budget_s:
            rec.row(**base, mode=label, error="skipped: suite time budget")
            continue
        if options == LIBRARY_STACK:
            if converted is None:
                rec.row(**base, mode=label, error="skipped: needs a converted model (list it after an fp8 variant)")
                continue
            log(f"variant {options}")
            try:
                extra = _apply_library_stack(transformer, device, compile_blocks=compiled)
                with torch.inference_mode():
                    first_s, _ = wall(lambda: transformer(**inputs), device)
                measure(transformer, inputs, f"{label}: weights of the previous variant (fp8={converted})", ref=ref,
                        first_call_s=first_s, extra=extra)  # fmt: skip
            except Exception as exc:
                traceback.print_exc()
                rec.row(**base, mode=label, error=repr(exc)[:400])
            continue
        attn = acc.parse_options(options).attention
        if attn and device.type == "cuda" and attn != fa.CUDNN_MODE:  # cuDNN's kernel checks itself on apply
            if attn not in working:
                rec.row(**base, mode=label, error=f"skipped: attn={attn} did not work in the attention microbench")
                continue
            fa.set_default_loader(min(working[attn])[1])  # the faster loader that worked for this mode
        log(f"variant {options}")
        try:
            granularity = acc.parse_options(options).fp8
            if converted not in (None, granularity):
                # FP8 weights cannot be requantized with other scales: start again from bf16.
                log(f"rebuilding the bf16 transformer for fp8={granularity}")
                del transformer, pipe
                torch._dynamo.reset()
                free(device)
                transformer = M.flux2_transformer(device, "bf16", args.tiny)
                pipe = SimpleNamespace(transformer=transformer)
            converted = granularity
            report = acc.apply_fast_path(pipe, acc.parse_options(options), "flux2_dev_transformer", device)
            free(device)
            with torch.inference_mode():
                first_s, _ = wall(lambda: transformer(**inputs), device)  # compile (and attention autotune)
            details = {k: v for k, v in report.details.items() if k != "sdpa_order"}
            out, t = measure(transformer, inputs, label, ref=ref, first_call_s=first_s,
                             extra={"fast_path_asked": report.asked, "fast_path_applied": report.applied,
                                    "apply_s": round(report.apply_ms / 1000, 2), **details})  # fmt: skip
            if role == "baseline":
                outputs["baseline"] = (out, t)
        except Exception as exc:
            traceback.print_exc()
            rec.row(**base, mode=label, error=repr(exc)[:400])
    del transformer, pipe
    torch._dynamo.reset()
    free(device)


LIBRARY_STACK = "diffusers-compile+diffusers-attention"  # a --fast-variants entry: the library's own calls


def _apply_library_stack(transformer, device: torch.device, compile_blocks: bool = True) -> dict[str, Any]:
    """The libraries' own calls in place of ours, on the weights as they are: our compiled code
    dropped and our attention routing removed, then diffusers' set_attention_backend('_native_cudnn')
    and compile_repeated_blocks (fullgraph, static shapes: what acceleration.compile_repeated_blocks
    passes too)."""
    from flexy_worker import fp8_attention as fa

    torch._dynamo.reset()
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    fa.uninstall(transformer)
    backend = "_native_cudnn" if device.type == "cuda" else "native"
    transformer.set_attention_backend(backend)
    if compile_blocks:
        transformer.compile_repeated_blocks(fullgraph=True, dynamic=False)
    return {"attention_backend": f"diffusers set_attention_backend({backend!r})",
            "compile": "diffusers ModelMixin.compile_repeated_blocks(fullgraph=True, dynamic=False)"}  # fmt: skip


def _cudnn_attention_microbench(rec: Recorder, device: torch.device, tiny: bool) -> None:
    """cuDNN's FP8 attention (flexy_worker.cudnn_attention) against its bf16 one at FLUX.2's shape:
    ms a call with and without the quantization around it, and the error against fp32 attention
    for flat and peaky scores."""
    import traceback

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from flexy_worker import cudnn_attention as ca

    heads, seq, dim = (2, 640, 128) if tiny else (48, 4608, 128)
    flops = 4 * heads * seq * seq * dim
    att = {"engine": "attention", "batch": 1, "heads": heads, "tokens": seq, "head_dim": dim}
    try:
        g = torch.Generator().manual_seed(7)
        q, k, v = (torch.randn(1, seq, heads, dim, generator=g).to(device, torch.bfloat16) for _ in range(3))
        q_sharp = (q.float() * 3).to(torch.bfloat16)

        def sdpa(qq, kk=k, vv=v):
            return torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (qq, kk, vv))).transpose(1, 2)

        with torch.inference_mode():
            ref_flat, ref_sharp = sdpa(q.float(), k.float(), v.float()), sdpa(q_sharp.float(), k.float(), v.float())
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]) if device.type == "cuda" else _no_context():
                ms = _timed_ms(lambda: sdpa(q), device)
                rec.row(**att, mode="attention sdpa=cudnn bf16", ms_per_call=round(ms, 4), tflops=round(flops / ms / 1e9, 1),
                        rel_err_vs_fp32=round(rel_err(sdpa(q), ref_flat), 5),
                        rel_err_sharp_vs_fp32=round(rel_err(sdpa(q_sharp), ref_sharp), 5))  # fmt: skip
            check = ca.self_test(device) if device.type == "cuda" else {"ok": False, "error": "cpu: emulation only"}
            q8, dq = ca.quantize(q)
            k8, dk = ca.quantize(k)
            v8, dv = ca.quantize(v)
            so = 0.5 / dv
            scale = 1 / dim**0.5
            kernel_ms = _timed_ms(lambda: torch.ops.flexy.cudnn_fp8_sdpa(q8, k8, v8, dq, dk, dv, so, scale), device)
            total_ms = _timed_ms(lambda: ca.cudnn_fp8_attention(q, k, v), device)
            rec.row(**att, mode="attention cudnn sdpa_fp8 (e4m3 q, k, v, p, o; per-tensor scales)", ms_per_call=round(total_ms, 4),
                    kernel_ms=round(kernel_ms, 4), tflops=round(flops / total_ms / 1e9, 1),
                    kernel_tflops=round(flops / kernel_ms / 1e9, 1), self_test=check,
                    quantize_note="ms_per_call: eager quantize + kernel + dequantize; compiled, the quantization fuses with RoPE",
                    rel_err_vs_fp32=round(rel_err(ca.cudnn_fp8_attention(q, k, v), ref_flat), 5),
                    rel_err_sharp_vs_fp32=round(rel_err(ca.cudnn_fp8_attention(q_sharp, k, v), ref_sharp), 5))  # fmt: skip
    except Exception as exc:
        traceback.print_exc()
        rec.row(**att, mode="attention cudnn sdpa_fp8", error=repr(exc)[:400])


class _no_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _timed_ms(fn, device: torch.device, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    sync(device)
    if device.type != "cuda":
        return wall(fn, device)[0] * 1000
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


FLUX2_LIBS_VARIANTS = ";".join([
    "fp8+accum=fast+compile+sdpa=cudnn",  # the fast preset as it is: the same-run baseline
    "fp8+accum=fast+attn=cudnn-fp8+compile+sdpa=cudnn",  # + cuDNN's FP8 attention
    "fp8=torchao+compile+sdpa=cudnn",  # torchao's float8 row-wise layers instead of ours
    "fp8=torchao+attn=cudnn-fp8+compile+sdpa=cudnn",
    "fp8=torchao+compile=reduce-overhead+sdpa=cudnn",  # CUDA graphs (Inductor's cudagraph trees) per block
    LIBRARY_STACK,  # torchao's layers, diffusers' regional compile and attention backend
])


def suite_flux2_libs(args, rec: Recorder, device: torch.device) -> None:
    """The libraries against our own code, one FLUX.2 transformer step at 1024x1024 (about 4-5
    minutes on an H200): cuDNN's FP8 attention alone (microbench), then bf16 eager (the reference),
    the fast preset (same-run baseline), + attn=cudnn-fp8, torchao's float8 layers (fp8=torchao:
    the model is rebuilt from bf16), diffusers' own compile_repeated_blocks and attention backend on
    those weights, and Inductor's CUDA graphs. --fast-variants replaces the list; --variants-budget-s
    bounds the time after which no variant starts."""
    if not args.skip_attention_bench:
        _cudnn_attention_microbench(rec, device, args.tiny)
        free(device)
    if not args.fast_variants:
        args.fast_variants = FLUX2_LIBS_VARIANTS
    _flux2_fast_variants(args, rec, device, {}, time.perf_counter(), args.variants_budget_s)


def suite_flux2_fast_attn(args, rec: Recorder, device: torch.device) -> None:
    """Attention alone at FLUX.2's shape (1 x 48 heads x 4608 tokens x 128; --tiny: 2 x 640): cuDNN
    SDPA in bf16 against each mode of the Triton kernel (flexy_worker.fp8_attention) with TMA and plain
    loads: ms a call (quantization pre-pass included, and alone), TFLOP/s, error against fp32
    attention for flat and peaky scores. Prints 'ATTN_OK {mode, loader, ms}' for each kernel that ran
    and was right (error under 10 %), which suite flux2-fast reads."""
    import math
    import traceback
    from contextlib import nullcontext

    cuda = device.type == "cuda"

    def timed_ms(fn, reps: int = 20) -> float:
        return _timed_ms(fn, device, reps)

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from flexy_worker import fp8_attention as fa

        heads, seq, dim = (2, 640, 128) if args.tiny else (48, 4608, 128)
        flops = 4 * heads * seq * seq * dim
        att = {"engine": "attention", "batch": 1, "heads": heads, "tokens": seq, "head_dim": dim}
        g = torch.Generator().manual_seed(7)
        q, k, v = (torch.randn(1, seq, heads, dim, generator=g) for _ in range(3))
        k = k + 0.5 * torch.randn(1, 1, heads, dim, generator=g)  # a per-head channel offset (smoothing's case)
        q, k, v = (t.to(device, torch.bfloat16) for t in (q, k, v))
        q_sharp = (q.float() * 3).to(torch.bfloat16)  # scores x3: peakier attention, as trained models have

        def sdpa(qq, kk=k, vv=v):
            return torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (qq, kk, vv))).transpose(1, 2)

        with torch.inference_mode():
            ref_flat = sdpa(q.float(), k.float(), v.float())
            ref_sharp = sdpa(q_sharp.float(), k.float(), v.float())
        log(f"attention microbench: {heads} heads x {seq} tokens x {dim}, {flops / 1e12:.2f} TFLOP a call")
        cudnn = sdpa_kernel([SDPBackend.CUDNN_ATTENTION]) if cuda else nullcontext()
        with torch.inference_mode(), cudnn:
            ms = timed_ms(lambda: sdpa(q))
            rec.row(**att, mode="attention sdpa=cudnn bf16", ms_per_call=round(ms, 4), tflops=round(flops / ms / 1e9, 1),
                    rel_err_vs_fp32=round(rel_err(sdpa(q), ref_flat), 5),
                    rel_err_sharp_vs_fp32=round(rel_err(sdpa(q_sharp), ref_sharp), 5))  # fmt: skip
        for mode, (qk, pv) in fa.MODES.items():
            for loader in ("tma", "ptr"):
                label = f"attention triton attn={mode} (qk {qk}, pv {pv})" + (f" loader={loader}" if cuda else " (cpu: emulated)")
                try:
                    if not cuda:  # no Triton on the CPU: the same blockwise arithmetic in PyTorch, for its error
                        with torch.inference_mode():
                            emu = fa.reference_fp8_attention(q, k, v, qk=qk, pv=pv)
                            emu_sharp = fa.reference_fp8_attention(q_sharp, k, v, qk=qk, pv=pv)
                        rec.row(**att, mode=label, error="needs CUDA: errors are the PyTorch emulation's",
                                rel_err_vs_fp32=round(rel_err(emu, ref_flat), 5),
                                rel_err_sharp_vs_fp32=round(rel_err(emu_sharp, ref_sharp), 5))  # fmt: skip
                        break
                    with torch.inference_mode():
                        call = lambda qq: fa.fp8_attention(qq, k, v, qk=qk, pv=pv, loader=loader)  # noqa: E731
                        tune_s, _ = wall(lambda: call(q), device)  # autotunes once per shape and mode
                        ms = timed_ms(lambda: call(q))
                        pre_ms = timed_ms(lambda: fa.quantize_kv(k, v, qk=qk, pv=pv))
                        err, err_sharp = rel_err(call(q), ref_flat), rel_err(call(q_sharp), ref_sharp)
                    if math.isfinite(err) and err < 0.1:  # usable: the parent process may install it
                        print("ATTN_OK " + json.dumps({"mode": mode, "loader": loader, "ms": ms}), flush=True)
                    rec.row(**att, mode=label, ms_per_call=round(ms, 4), tflops=round(flops / ms / 1e9, 1),
                            prepass_ms=round(pre_ms, 4), first_call_s=round(tune_s, 1),
                            rel_err_vs_fp32=round(err, 5), rel_err_sharp_vs_fp32=round(err_sharp, 5),
                            config=str(getattr(fa._attn_fwd_tuned, "best_config", None)))  # fmt: skip
                except Exception as exc:
                    traceback.print_exc()
                    rec.row(**att, mode=label, error=repr(exc)[:400])
    except Exception as exc:
        traceback.print_exc()
        rec.row(engine="attention", mode="attention microbench", error=repr(exc)[:400])


SUITES = {
    "flux2-step": suite_flux2_step,
    "pipe-flux2": suite_pipe_flux2,
    "pipe-others": suite_pipe_others,
    "residency": suite_residency,
    "compile-child": suite_compile_child,
    "flux2-profile": suite_flux2_profile,
    "hook-check": suite_hook_check,
    "flux2-fast": suite_flux2_fast,
    "flux2-fast-attn": suite_flux2_fast_attn,
    "flux2-libs": suite_flux2_libs,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=[*SUITES, "all"], required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny configs (checks the bench itself; CPU works)")
    parser.add_argument("--compile-tiny", action="store_true", help="with --tiny, compile too")
    parser.add_argument("--device", default=None)
    parser.add_argument("--results", default=None)
    parser.add_argument("--fast-variants", default=None,
                        help="flux2-fast: fast-path option strings separated by ';' (the first is the baseline)")
    parser.add_argument("--skip-attention-bench", action="store_true", help="flux2-fast: no attention microbench")
    parser.add_argument("--variants-budget-s", type=float, default=400.0,
                        help="flux2-fast, flux2-libs: no variant starts after this many seconds of the suite")
    parser.add_argument("--command", default=None, help="command string recorded in each row")
    parser.add_argument("--reps", type=int, default=5, help="timed transformer steps per mode")
    parser.add_argument("--pipe-reps", type=int, default=2, help="images per mode in the pipeline suites")
    parser.add_argument("--cache", type=lambda v: [float(x) for x in v.split(",") if float(x) > 0], default=[0.08, 0.2, 0.4],
                        help="step-cache thresholds measured, comma-separated (0: none)")
    parser.add_argument("--pipe-reps-small", type=int, default=4, help="images per mode for engines under 5 s an image")
    parser.add_argument("--flux2-fast", type=lambda v: v.split(","), default=None,
                        help="pipe-flux2: fast paths, in order; 'best': the fastest step variant of this run under 2 %% error")
    parser.add_argument("--fast-path-env", default=None, help="hook-check: FLEXY_FAST_PATH value (default *:fast)")
    parser.add_argument("--engines", type=lambda v: v.split(","), default=None, help="pipe-others: engines to run")
    parser.add_argument("--compile-cache", default=None, help="persistent compile cache folder")
    parser.add_argument("--skip-local-te", action="store_true")
    parser.add_argument("--parts", type=lambda v: v.split(","), default=None,
                        help="residency: bandwidth,local-te,coresident,compile-cache (default all)")
    parser.add_argument("--autotune", action="store_true", help="flux2-step: also time max-autotune compile")
    parser.add_argument("--only-fast", action="store_true", help="flux2-step: bf16 reference, then FP8 autotuned and per-tensor only")
    parser.add_argument("--time-budget-s", type=float, default=float(os.environ.get("BENCH_TIME_BUDGET_S", 1e9)),
                        help="skip remaining parts once this much wall time has passed")  # fmt: skip
    args = parser.parse_args(argv)
    suites = list(SUITES)[:4] if "all" in args.suite else args.suite
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    rec = Recorder(args, device)
    if "compile-child" not in suites:
        log(f"device {rec.common['card']} driver {rec.common['driver']} torch {rec.common['torch']} "
            f"diffusers {rec.common['diffusers']} bitsandbytes {rec.common['bitsandbytes']}")  # fmt: skip
    failed = 0
    for name in suites:
        log(f"suite {name}")
        try:
            SUITES[name](args, rec, device)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rec.row(mode=f"suite {name}", error=repr(exc)[:400])
            failed += 1
        free(device)
    if "compile-child" not in suites:
        print_table(rec.rows)
    return 1 if failed else 0


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| engine | mode | s/step | s/image | peak GB | ratio | err | compile s |")
    for r in rows:
        print(f"| {r.get('engine', '-')} | {r.get('mode')} | {r.get('s_per_step')} | {r.get('s_per_image')} | "
              f"{r.get('peak_gb')} | {r.get('overhead_ratio', '')} | {r.get('rel_err_vs_bf16', '')} | {r.get('compile_s', '')} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
