"""The engine manager of a device group (``group.py``): every rank holds the same engines and runs
every job; a denoiser with a context-parallel plan splits each image's tokens across the ranks.

Context parallelism is diffusers' own (``ContextParallelConfig`` and ``enable_parallelism``, with the
``_cp_plan`` the model class declares: FLUX.2's and FLUX.1's transformers have one). Ulysses over all
ranks: each rank holds 1/N of the tokens; around attention an all-to-all trades tokens for heads, so
each rank attends over the whole sequence for 1/N of the heads (FLUX.2 has 48). Ring attention needs
an attention kernel that returns its log-sum-exp, which diffusers' default (native SDPA) backend does
not, so it cannot run on the CPU and is left to the GPU bench. On GPUs the split is Ulysses-anything
(any token count: NCCL gathers uneven shards, so reference images and sizes such as 1008x1008 work);
on the CPU, gloo gathers only even shards, so a request whose tokens do not split evenly fails there.

Engines without a plan (SD3's transformer, RealVisXL's UNet) run whole on every rank, identically:
the group is one slot, so the other ranks would idle anyway, and ranks that do the same work keep the
same engines resident, the same fast-path choices and the same canaries (collectives stay paired)
without any bookkeeping.

How a command runs: rank 0 (the worker's process) broadcasts it; every rank runs it; then the ranks
agree on how it went (``DeviceGroup.agree``), and rank 0 raises the first failure, its own before
another rank's, so an engine that fails to load on one rank fails on all. A job:

1. rank 0 checks the request (bad input never reaches the others) and sends it with the engines it
   holds; a rank holding one more (a check unloaded it on rank 0 alone) unloads it;
2. every rank loads the engine, and the ranks agree: none starts the pipeline unless all can;
3. every rank runs the pipeline with the same seed. At the end of each step rank 0 decides (its
   step callback: progress, a cancel, an interrupt, an injected fault) and broadcasts go-on or stop,
   so every rank stops at the same step; only rank 0 reports progress and returns images;
4. the ranks agree again, with the steps each completed: unequal counts, or a rank that never reports
   (an error inside a step on one rank leaves the others in a collective), end the group.

The remote FLUX.2 text encoder is called once, by rank 0, and its embeddings shared.

Fast-path options that would make ranks compute differently are dropped in a group: ``attn=``
(our attention kernels replace diffusers' dispatcher, which context parallelism goes through) and
``cache=`` (each rank would judge the step cache on its own tokens).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .. import errors
from ..errors import EngineUnavailable, JobCancelled, TextEncoderUnavailable, WorkerError
from ..group import DeviceGroup, Outcome
from .base import GenerateOutput, GenerateRequest, StepEvent
from .manager import EngineManager, LoadedEngine

log = logging.getLogger(__name__)

_ERROR_CLASSES = {cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, WorkerError)}


def _never() -> bool:
    return False


class GroupEngineManager(EngineManager):
    """EngineManager's interface on rank 0 (load, unload, generate go to every rank); ``follow()`` on
    the others."""

    def __init__(self, group: DeviceGroup, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.group = group
        self._in_command = False  # a command's own nested calls (generate → load) run here only
        self._steps = 0
        for engine, path in list(self.fast_paths.items()):
            if path.attention or path.step_cache:
                log.warning("fast path %s: attn= and cache= are not used in a device group (ranks must compute alike)", engine)
                self.fast_paths[engine] = dataclasses.replace(path, attention=None, step_cache=None)

    # ---- rank 0 ---------------------------------------------------------------------------------

    def load(self, engine: str) -> float:
        if self._in_command:  # within a command (generate → load): every rank is doing the same
            return EngineManager.load(self, engine)
        return self._lead(("load", (engine,)), lambda: self._agreed(lambda: EngineManager.load(self, engine)))

    def unload(self, engine: str | None = None) -> None:
        if self._in_command:
            return EngineManager.unload(self, engine)
        return self._lead(("unload", (engine,)), lambda: self._agreed(lambda: EngineManager.unload(self, engine)))

    def generate(self, request: GenerateRequest, on_step: Callable[[StepEvent], None],
                 should_cancel: Callable[[], bool]) -> GenerateOutput:  # fmt: skip
        self.validate(request)  # bad input stays on rank 0
        refusal = None if request.engine in self._loaded else self.health.refusal(request.engine)
        if refusal:  # an unavailable engine, as rank 0's health book says: no rank starts on it
            raise EngineUnavailable(refusal)
        if should_cancel():
            raise JobCancelled("cancelled before it started")
        held = tuple(self._loaded)
        # The others send no progress: no previews to draw.
        theirs = dataclasses.replace(request, preview_every=0)
        return self._lead(("generate", (theirs, held)),
                          lambda: self._generate_here(request, held, self._leading_step(on_step, should_cancel)))  # fmt: skip

    def _lead(self, command: tuple[str, tuple], here: Callable[[], Any]) -> Any:
        self._in_command = True
        try:
            self.group.send_command(command)
            return here()
        finally:
            self._in_command = False

    def _leading_step(self, on_step: Callable[[StepEvent], None], should_cancel: Callable[[], bool]) -> Callable[[StepEvent], None]:
        def step(event: StepEvent) -> None:
            stop_error: Exception | None = None
            try:
                on_step(event)  # the worker's: progress, faults, and its own cancel check
                stop = should_cancel()
            except Exception as exc:
                stop_error, stop = exc, True
            self.group.step(stop)
            self._steps = event.step
            if stop:
                raise stop_error or JobCancelled(f"cancelled after step {event.step} of {event.total_steps}")

        return step

    # ---- the other ranks ------------------------------------------------------------------------

    def follow(self) -> None:
        """Run rank 0's commands until the process ends (rank 0 gone, or the group failed)."""
        log.info("rank %d following rank 0", self.group.rank)
        while True:
            kind, args = self.group.receive_command()
            self._in_command = True
            try:
                if kind == "load":
                    self._agreed(lambda: EngineManager.load(self, *args))
                elif kind == "unload":
                    self._agreed(lambda: EngineManager.unload(self, *args))
                elif kind == "generate":
                    request, held = args
                    self._generate_here(request, held, self._following_step)
                else:
                    self.group.fail(f"unknown command {kind!r} from rank 0")
            except WorkerError as exc:  # agreed: rank 0 reports it
                log.info("rank %d: %s ended: %s", self.group.rank, kind, exc.message)
            finally:
                self._in_command = False

    def _following_step(self, event: StepEvent) -> None:
        stop = self.group.step()
        self._steps = event.step
        if stop:
            raise JobCancelled(f"stopped with rank 0 after step {event.step} of {event.total_steps}")

    # ---- every rank -----------------------------------------------------------------------------

    def _generate_here(self, request: GenerateRequest, held: tuple[str, ...], on_step: Callable[[StepEvent], None]) -> GenerateOutput:
        for engine in [e for e in self._loaded if e not in held]:
            EngineManager.unload(self, engine)
        self._agreed(lambda: EngineManager.load(self, request.engine))
        self._steps = 0
        return self._agreed(lambda: EngineManager.generate(self, request, on_step, _never), stepped=True)

    def _agreed(self, action: Callable[[], Any], stepped: bool = False) -> Any:
        """Runs this rank's part, then every rank learns how every other's went; raises this rank's
        failure, else the first other rank's, so all ranks leave the command the same way."""
        result, error = None, None
        try:
            result = action()
        except Exception as exc:
            error = exc if isinstance(exc, WorkerError) else errors.classify_exception(exc)
        outcomes = self.group.agree(Outcome(self.group.rank, type(error).__name__ if error else None,
                                            error.message if error else None, error.field if error else None,
                                            self._steps))  # fmt: skip
        if stepped:
            steps = {o.steps for o in outcomes}
            if len(steps) > 1:
                self.group.fail(f"the ranks left the job after different steps: {[o.steps for o in outcomes]}")
            if isinstance(error, JobCancelled) and self.group.rank == 0:
                error = JobCancelled(f"{error.message} (all {len(outcomes)} ranks stopped after step {self._steps})")
        if error is not None:
            raise error
        failed = next((o for o in outcomes if not o.ok), None)
        if failed is not None:
            raise _ERROR_CLASSES.get(failed.error or "", WorkerError)(f"rank {failed.rank}: {failed.message}", failed.field)
        return result

    def _prepare_denoiser(self, engine: str, pipeline: Any) -> None:
        denoiser = getattr(pipeline, "transformer", None)
        if denoiser is None or not getattr(denoiser, "_cp_plan", None):
            log.info("%s has no context-parallel plan: every rank of the group runs it whole", engine)
            return
        from diffusers import ContextParallelConfig

        anything = self.device.type == "cuda"
        config = ContextParallelConfig(ulysses_degree=self.group.world_size, ulysses_anything=anything, mesh=self.group.mesh)
        with _defined_device_count():
            denoiser.enable_parallelism(config=config)
        log.info("%s: context parallel over %d ranks (Ulysses%s)", engine, self.group.world_size, "-anything" if anything else "")

    def fetch_remote_prompt_embeds(self, prompts: list[str], loaded: LoadedEngine) -> Any:
        """Rank 0 calls the remote encoder once and shares what came back (or why nothing did)."""
        shared: tuple[str, Any] | None = None
        if self.group.rank == 0:
            try:
                shared = ("ok", super().fetch_remote_prompt_embeds(prompts, loaded).cpu())
            except Exception as exc:
                error = exc if isinstance(exc, WorkerError) else TextEncoderUnavailable(f"{type(exc).__name__}: {exc}")
                shared = (type(error).__name__, error.message)
        kind, value = self.group.share(shared)
        if kind != "ok":
            raise _ERROR_CLASSES.get(kind, TextEncoderUnavailable)(value)
        return value


@contextlib.contextmanager
def _defined_device_count() -> Iterator[None]:
    """diffusers 0.42.1 (``_resolve_parallel_config``) takes each rank's device as
    ``rank % torch.accelerator.device_count()``, a division by zero on a host without an accelerator.
    Context parallelism never uses that device, so on such a host the count reads 1 while the plan is
    applied, and nothing else changes."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.accelerator.device_count = count  # type: ignore[assignment]
