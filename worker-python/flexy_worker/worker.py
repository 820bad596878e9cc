"""The worker process: one per GPU, speaking the wire protocol (``protocol.py``) on stdin/stdout.

Threads, as in ComfyUI's single prompt worker:

* the main thread is the GPU thread. It alone imports and drives torch/CUDA (through the
  ``EngineManager``): it loads the preload set, sends ``ready``, then runs queued jobs one at a time;
* a reader thread, started before the slow imports, parses frames from stdin and handles control at
  once: ``ping`` is answered from a state snapshot the GPU thread keeps, so a busy or hung GPU never
  delays a pong (a hang shows as a ``busy_job_id`` whose ``last_progress_at`` stops moving: judge hangs
  by that, not by missing pongs); ``cancel`` flags the running job (acted on between steps) or drops a
  queued one, and is the only thing answered ``cancelled``; ``interrupt`` does the same for a job the
  supervisor takes back; a job stopped for any other reason (a
  signal, a shutdown, the supervisor gone) is answered ``interrupted``, so the supervisor puts it back; ``generate``/``unload`` are queued; ``shutdown`` lets the current job finish, then exit 0.

``last_progress_at`` is the time (ms since the epoch) of the job's last step, or of its start before
its first step. Job output: ``progress`` per step (with a preview payload every ``preview_every``
steps), one ``image`` frame per image (raw RGB8 payload), then ``result``.

Ends of the process:

* ``shutdown`` message: the running job finishes, queued jobs are answered ``interrupted``, exit 0;
* SIGTERM (or SIGINT): the running job is interrupted at its next step (answered ``interrupted``), exit 0;
* stdin EOF (the supervisor is gone): the same, and if the GPU thread is stuck in a step it is not
  waited for longer than ``FLEXY_WORKER_EOF_GRACE_S`` seconds: an orphaned worker must not hold the
  GPU. EOF before ``ready`` exits at once;
* poisoned CUDA context (``CudaFatal``): the job's ``failed`` result is sent, exit 70;
* out of memory while loading the preload set: exit 71;
* a frame that cannot be parsed (bad prefix, JSON, unknown type): exit 72;
* a setting that does not pass (``settings.py``): exit 2, each bad variable named on stderr.

Settings arrive in the environment only, read once by ``settings.load_settings``.

Out of memory during a job is answered ``failed``/``oom`` after freeing what can be freed; the worker
keeps serving. A second OOM in a row also unloads every engine except the one the job used.

Fault injection (settings read once at start; for tests and the supervisor's fault suite). Each names a prompt
substring; a job whose prompt contains it triggers the fault inside its step callback, so it goes
through the same classification path as a real error:

* ``FLEXY_FAULT_OOM_ON_JOB=<substring>``: raises ``torch.cuda.OutOfMemoryError``;
* ``FLEXY_FAULT_CUDA_FATAL_ON_JOB=<substring>``: raises
  ``RuntimeError('CUDA error: an illegal memory access was encountered')``;
* ``FLEXY_FAULT_HANG_ON_JOB=<substring>``: sleeps forever inside the second step, after the first
  was reported (a hung kernel mid-denoise: pongs keep coming, ``last_progress_at`` stops moving);
* ``FLEXY_FAULT_EXIT_ON_JOB=<substring>:<code|SIGNAME>``: exits mid-job with that code, or kills itself
  with that signal (e.g. ``SIGSEGV``), without sending a result;
* ``FLEXY_FAULT_OOM_ON_PRELOAD=<engine id>``: loading that engine of the preload set raises
  ``torch.cuda.OutOfMemoryError`` (so the worker exits 71).
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol as wire
from .protocol import ExitCode
from .settings import SettingsError, WorkerSettings

log = logging.getLogger("flexy_worker")

_IDLE_POLL_S = 0.25  # how often an idle GPU thread notices SIGTERM (signal handlers take no locks)


# ---- fault injection -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    oom: str | None = None
    cuda_fatal: str | None = None
    hang: str | None = None
    exit_on: str | None = None
    exit_with: str | None = None
    preload_oom: str | None = None

    @staticmethod
    def from_settings(settings: WorkerSettings) -> "Faults":
        # The settings checked the <prompt substring>:<exit code|SIGNAME> shape of the exit fault.
        exit_on, _, exit_with = (settings.fault_exit or "").rpartition(":")
        return Faults(settings.fault_oom, settings.fault_cuda_fatal, settings.fault_hang, exit_on or None,
                      exit_with or None, settings.fault_preload_oom)

    def any(self) -> bool:
        return any((self.oom, self.cuda_fatal, self.hang, self.exit_on, self.preload_oom))

    def fire_on_preload(self, engine: str) -> None:
        if self.preload_oom == engine:
            import torch

            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory while loading {engine} (injected fault)")

    def fire(self, prompt: str, step: int = 1) -> None:
        """Called inside each step (1-based): raises, hangs or exits when the prompt matches a configured
        fault. All fire at the first step except the hang, which waits for the second."""
        if self.oom and self.oom in prompt:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected fault)")
        if self.cuda_fatal and self.cuda_fatal in prompt:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.hang and self.hang in prompt and step >= 2:
            log.warning("fault injection: hanging inside a step")
            while True:
                time.sleep(3600)
        if self.exit_on and self.exit_on in prompt:
            assert self.exit_with is not None
            log.warning("fault injection: exiting mid-job with %s", self.exit_with)
            logging.shutdown()
            if self.exit_with.lstrip("-").isdigit():
                os._exit(int(self.exit_with))
            signum = getattr(signal, self.exit_with.upper())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the signal lands asynchronously; never return into the pipeline
            os._exit(1)


# ---- jobs ----------------------------------------------------------------------------------------


@dataclass
class Job:
    message: wire.GenerateMessage
    references: list[Any]  # PIL images
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled by the supervisor"
    # Set with ``cancel`` when the stop was not asked for by a user's cancel: answered ``interrupted``.
    interrupted: bool = False

    @property
    def job_id(self) -> str:
        return self.message.job_id


@dataclass(frozen=True)
class Unload:
    engine: str | None


@dataclass(frozen=True)
class CheckEngines:
    """Due while idle: look at every snapshot's files again, retry engines whose backoff ended."""


class _Stop(Exception):
    """Internal: the GPU loop should end with this exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _now_ms() -> int:
    return int(time.time() * 1000)


def _images_from_payload(message: wire.GenerateMessage, payload: bytes) -> list[Any]:
    from PIL import Image

    slices = wire.split_references(message, payload)
    return [Image.frombytes("RGB", (ref.width, ref.height), bytes(view)) for ref, view in zip(message.references, slices, strict=True)]


def _check_generate(message: wire.GenerateMessage) -> None:
    """Checks that need no catalog (the engine manager checks the engine's own limits)."""
    for name in ("steps", "width", "height", "num_images"):
        if getattr(message, name) < 1:
            raise wire.MessageError(f"{name} must be at least 1, got {getattr(message, name)}", name)
    if message.preview_every < 0:
        raise wire.MessageError(f"preview_every must be 0 or more, got {message.preview_every}", "preview_every")
    if not message.job_id:
        raise wire.MessageError("job_id must not be empty", "job_id")


# ---- the worker ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, manager: Any, writer: wire.FrameWriter, *, device: str, faults: Faults,
                 budget_bytes: int, errors: Any, eof_grace_s: float):
        self.manager = manager
        self.writer = writer
        self.device = device
        self.faults = faults
        self.eof_grace_s = eof_grace_s
        self.errors = errors  # the flexy_worker.errors module (imported after torch is set up)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job | Unload] = collections.deque()
        self._current: Job | None = None
        self._stopping = False
        self._stop_code = ExitCode.OK
        self._signalled = False  # set by the SIGTERM handler, which must not take locks
        self._pipe_broken = False
        self._consecutive_ooms = 0
        self.last_progress_at: int | None = None
        self.residency = wire.ResidencyReport.empty(budget_bytes)
        self.engine_info: dict[str, wire.EngineInfo] = {}
        self.ready_sent = False
        self.preload: tuple[str, ...] = ()
        self.engine_check_s = 30.0
        self._next_check = time.monotonic()
        self._started = threading.Event()  # a standby worker's `start`

    def attach(self, manager: Any, errors: Any, device: str, budget_bytes: int) -> None:
        """Hand over the engine manager once the heavy imports are done (the reader runs before)."""
        self.manager, self.errors, self.device = manager, errors, device
        with self._lock:
            self.residency = wire.ResidencyReport.empty(budget_bytes)

    def stop_requested(self) -> bool:
        return self._stopping or self._signalled

    # -- output ------------------------------------------------------------------------------------

    def send(self, message: wire.Message, payload: Any = b"") -> None:
        if self._pipe_broken:
            return
        try:
            self.writer.send(message, payload)
        except OSError as exc:  # EPIPE: the supervisor is gone
            self._pipe_broken = True
            log.warning("stdout is gone (%s): stopping", exc)
            self.request_stop("the supervisor stopped reading", interrupt=True)

    def _result(self, job_id: str, status: str, *, error: wire.ErrorInfo | None = None, engine: str | None = None,
                timings: wire.Timings | None = None, weights: str | None = None, revision: str | None = None,
                num_images: int = 0) -> None:
        info = self.engine_info.get(engine or "")
        self.send(wire.ResultMessage(
            job_id=job_id,
            status=status,  # type: ignore[arg-type]
            error=error,
            timings=timings or wire.Timings(),
            weights=weights or (info.weights if info else None),  # type: ignore[arg-type]
            model_revision=revision or (info.revision if info else None),
            num_images=num_images,
        ))

    # -- control (reader thread) -------------------------------------------------------------------

    def request_stop(self, reason: str, *, interrupt: bool, code: int = ExitCode.OK) -> None:
        with self._lock:
            if not self._stopping:
                log.info("stopping: %s", reason)
                self._stop_code = code
            self._stopping = True
            if interrupt and self._current is not None:
                self._current.cancel_reason = f"interrupted: {reason}"
                self._current.interrupted = True
                self._current.cancel.set()
            self._wake.notify_all()

    def on_signal(self, signum: int, _frame: Any) -> None:
        self._signalled = True  # acted on by the GPU thread between steps or while idle

    def read_loop(self, reader: wire.FrameReader) -> None:
        """Reader thread: parse frames until EOF; control is handled here, work goes to the queue."""
        try:
            while True:
                frame = reader.read()
                if frame is None:
                    self._on_eof()
                    return
                self.on_frame(frame)
        except wire.ProtocolError as exc:
            log.error("protocol error on stdin: %s; exiting with %d", exc, ExitCode.PROTOCOL_ERROR)
            logging.shutdown()
            os._exit(ExitCode.PROTOCOL_ERROR)  # the stream is desynchronised: nothing more can be trusted
        except Exception:
            log.exception("reader thread failed; exiting with %d", ExitCode.PROTOCOL_ERROR)
            logging.shutdown()
            os._exit(ExitCode.PROTOCOL_ERROR)

    def _on_eof(self) -> None:
        """The supervisor is gone: stop now, and never outlive it holding the GPU."""
        if not self.ready_sent:
            log.info("stdin closed during start-up; exiting")
            logging.shutdown()
            os._exit(ExitCode.OK)
        self.request_stop("stdin closed", interrupt=True)
        grace = self.eof_grace_s
        time.sleep(grace)
        # Still here: the GPU thread is stuck in a step (a hung kernel) and would linger forever.
        log.error("GPU thread did not stop within %.0f s of stdin closing; exiting anyway", grace)
        logging.shutdown()
        os._exit(ExitCode.OK)

    def on_frame(self, frame: wire.Frame) -> None:
        kind = frame.type
        if kind == "ping":
            ping = wire.PingMessage.from_header(frame.header)
            with self._lock:
                busy = self._current.job_id if self._current else None
                last = self.last_progress_at if busy else None
                residency = self.residency
                engines = list(self.engine_info.values())
            self.send(wire.PongMessage(ping.seq, busy, last, residency, engines))
        elif kind == "start":
            wire.StartMessage.from_header(frame.header)
            self._started.set()
        elif kind == "cancel":
            self._on_cancel(wire.CancelMessage.from_header(frame.header).job_id)
        elif kind == "interrupt":
            self._on_cancel(wire.InterruptMessage.from_header(frame.header).job_id, interrupt=True)
        elif kind == "generate":
            self._on_generate(frame)
        elif kind == "unload":
            unload = wire.UnloadMessage.from_header(frame.header)
            with self._lock:
                self._queue.append(Unload(unload.engine))
                self._wake.notify_all()
        elif kind == "shutdown":
            wire.ShutdownMessage.from_header(frame.header)
            self.request_stop("shutdown requested", interrupt=False)
        else:
            raise wire.ProtocolError(f"unknown message type {kind!r}")

    def _on_cancel(self, job_id: str, *, interrupt: bool = False) -> None:
        """A user's cancel, or (``interrupt``) the supervisor taking the job back: answered ``interrupted``."""
        what = "interrupt" if interrupt else "cancel"
        dropped: Job | None = None
        with self._lock:
            if self._current is not None and self._current.job_id == job_id:
                if interrupt and not self._current.cancel.is_set():
                    self._current.interrupted = True
                    self._current.cancel_reason = "interrupted by the supervisor"
                self._current.cancel.set()
                log.info("job=%s %s requested (running; acted on at the next step)", job_id, what)
                return
            for item in self._queue:
                if isinstance(item, Job) and item.job_id == job_id:
                    dropped = item
                    break
            if dropped is not None:
                self._queue.remove(dropped)
        if dropped is None:
            log.info("job=%s %s for a job this worker does not hold; ignored", job_id, what)
            return
        if interrupt:
            log.info("job=%s interrupted while queued", job_id)
            self._interrupted(job_id, dropped.message.engine)
            return
        log.info("job=%s cancelled while queued", job_id)
        self._result(job_id, "cancelled", error=wire.ErrorInfo("cancelled", "cancelled before it started", None),
                     engine=dropped.message.engine)

    def _on_generate(self, frame: wire.Frame) -> None:
        job_id = frame.header.get("job_id")
        if not isinstance(job_id, str):
            raise wire.MessageError("generate without a string job_id", "job_id")
        try:
            message = wire.GenerateMessage.from_header(frame.header)
            _check_generate(message)
            references = _images_from_payload(message, frame.payload)
        except wire.MessageError as exc:
            log.info("job=%s rejected: %s", job_id, exc)
            self._result(job_id, "failed", error=wire.ErrorInfo("bad_input", str(exc), exc.field),
                         engine=frame.header.get("engine") if isinstance(frame.header.get("engine"), str) else None)
            return
        with self._lock:
            if not self._stopping:
                self._queue.append(Job(message, references))
                self._wake.notify_all()
                log.info("job=%s queued engine=%s %dx%d steps=%d images=%d refs=%d", job_id, message.engine,
                         message.width, message.height, message.steps, message.num_images, len(references))
                return
        self._interrupted(job_id, message.engine)

    # -- GPU thread --------------------------------------------------------------------------------

    def refresh_residency(self) -> None:
        try:
            report = wire.ResidencyReport.from_dict(self.manager.residency())
        except Exception as exc:  # a malformed report must not take the worker down
            log.warning("residency report unusable: %s", exc)
            return
        with self._lock:
            self.residency = report

    def refresh_engines(self) -> None:
        """Each engine's health as pongs report it (after a load, a job, a check)."""
        try:
            infos = {e["engine"]: wire.EngineInfo(**e) for e in self.manager.available()}
        except Exception as exc:  # a snapshot folder changing under us must not take the worker down
            log.warning("engine report unusable: %s", exc)
            return
        with self._lock:
            self.engine_info = infos

    def wait_for_start(self) -> bool:
        """A standby worker: everything is imported; wait for `start` (True) or a stop (False)."""
        log.info("standing by: imports done, waiting for start")
        while not self._started.wait(_IDLE_POLL_S):
            if self.stop_requested():
                return False
        log.info("started from standby")
        return not self.stop_requested()

    def _take(self) -> Job | Unload | CheckEngines | None:
        """Next work item, or None when the worker should stop (queued jobs are then answered)."""
        with self._lock:
            while not self._stopping and not self._signalled:
                # Between jobs too: a worker that is never idle still notices a snapshot gone bad.
                if time.monotonic() >= self._next_check:
                    self._next_check = time.monotonic() + self.engine_check_s
                    return CheckEngines()
                if self._queue:
                    break
                self._wake.wait(_IDLE_POLL_S)
            if self._signalled and not self._stopping:
                self._stopping = True
                log.info("stopping: SIGTERM")
            if self._stopping:
                drained = [item for item in self._queue if isinstance(item, Job)]
                self._queue.clear()
            else:
                item = self._queue.popleft()
                if isinstance(item, Job):
                    self._current = item
                    self.last_progress_at = _now_ms()
                return item
        for job in drained:
            self._interrupted(job.job_id, job.message.engine)
        return None

    def serve(self) -> int:
        """The GPU loop: run queued work until stopped; returns the exit code."""
        try:
            while True:
                item = self._take()
                if item is None:
                    return self._stop_code
                if isinstance(item, Unload):
                    self._unload(item.engine)
                    continue
                if isinstance(item, CheckEngines):
                    self._check_engines()
                    continue
                try:
                    self._run_job(item)
                except _Stop:
                    raise
                except Exception as exc:  # a bug on this side must cost one job, not the worker
                    log.exception("job=%s: unexpected error in the worker loop", item.job_id)
                    self._result(item.job_id, "failed", engine=item.message.engine,
                                 error=wire.ErrorInfo("internal", f"{type(exc).__name__}: {exc}", None))
                finally:
                    with self._lock:
                        self._current = None
                    self.refresh_engines()
        except _Stop as stop:
            return stop.code

    def _check_engines(self) -> None:
        """Snapshots' files checked again; an engine of the preload set that is available again is loaded."""
        try:
            changed = self.manager.check_engines()
        except Exception:  # a check that breaks must not take the worker down; the next one runs anyway
            log.exception("engine check failed")
            return
        for engine in self.preload:
            if self.manager.loaded(engine) is None and self.manager.health[engine].state == "available" and engine in changed:
                code = _preload(self.manager, engine, self.errors, self.faults)
                if code is not None:
                    raise _Stop(code)
        if changed:
            self.refresh_residency()
            self.refresh_engines()

    def _interrupted(self, job_id: str, engine: str) -> None:
        """A job this worker will not run because it is stopping: not a cancel, the supervisor puts it back."""
        self._result(job_id, "interrupted", error=wire.ErrorInfo("interrupted", "the worker is shutting down", None),
                     engine=engine)

    def _unload(self, engine: str | None) -> None:
        try:
            self.manager.unload(engine)
            log.info("unloaded %s", engine or "every engine")
        except Exception as exc:
            log.warning("unload of %s failed: %s", engine or "every engine", exc)
        self._free_memory()
        self.refresh_residency()

    def _should_cancel(self, job: Job) -> bool:
        if self._signalled and not job.cancel.is_set():
            job.cancel_reason = "interrupted: SIGTERM"
            job.interrupted = True
            job.cancel.set()
        return job.cancel.is_set()

    def _run_job(self, job: Job) -> None:
        msg = job.message
        errors = self.errors
        started = time.perf_counter()
        first_step = True

        def on_step(event: Any) -> None:
            nonlocal first_step
            self.faults.fire(msg.prompt, int(event.step))
            self.last_progress_at = _now_ms()
            if first_step:  # the engine is loaded by now: let pongs show it
                first_step = False
                self.refresh_residency()
            preview_ref, payload = None, b""
            if getattr(event, "preview", None) is not None:
                preview = _rgb8(event.preview)
                preview_ref, payload = wire.RawImageRef.rgb(preview.shape[1], preview.shape[0]), preview
            self.send(wire.ProgressMessage(msg.job_id, int(event.step), int(event.total_steps),
                                           round(float(event.elapsed_ms), 3), preview_ref), payload)
            if self._should_cancel(job):
                raise errors.JobCancelled(f"{job.cancel_reason} after step {event.step} of {event.total_steps}")

        log.info("job=%s started", msg.job_id)
        error: wire.ErrorInfo | None = None
        kind = "ok"
        output = None
        try:
            if self._should_cancel(job):
                raise errors.JobCancelled(f"{job.cancel_reason} before it started")
            request = build_request(msg, job.references)
            output = self.manager.generate(request, on_step, lambda: self._should_cancel(job))
        except Exception as exc:  # every failure is classified; nothing escapes the job
            classified = exc if isinstance(exc, errors.WorkerError) else _classify(errors, exc)
            kind = _kind_of(errors, classified)
            code = getattr(classified, "code", "internal") or "internal"
            message_text = str(classified) or type(exc).__name__
            if kind == "cancelled":
                code = "cancelled"
            error = wire.ErrorInfo(code, message_text, getattr(classified, "field", None))
            if kind == "internal":
                log.exception("job=%s failed with an unexpected error", msg.job_id)
            del exc, classified  # drop the traceback: its frames may hold device tensors
        total_ms = round((time.perf_counter() - started) * 1000, 3)

        pixels: list[Any] = []
        if error is None and output is not None:
            try:
                pixels = [_rgb8(image) for image in output.images]
            except ValueError as exc:
                kind, error = "internal", wire.ErrorInfo("internal", f"the engine returned an unusable image: {exc}", None)

        if error is None and output is not None:
            self._consecutive_ooms = 0
            for index, image in enumerate(pixels):
                ref = wire.RawImageRef.rgb(image.shape[1], image.shape[0])
                self.send(wire.ImageMessage(msg.job_id, index, ref), image)
            timings = {k: round(float(v), 3) for k, v in (output.timings or {}).items()}
            timings.setdefault("total_ms", total_ms)
            self.refresh_residency()  # before the result: a pong after it shows the state after the job
            self._result(msg.job_id, "succeeded", engine=msg.engine,
                         timings=wire.Timings(**{k: timings.get(k, 0) for k in ("load_ms", "text_encode_ms", "denoise_ms", "decode_ms", "total_ms")}),
                         weights=output.weights, revision=output.revision, num_images=len(pixels))
            log.info("job=%s succeeded in %.0f ms (%d images)", msg.job_id, total_ms, len(pixels))
            output = pixels = None  # type: ignore[assignment]
            return

        assert error is not None
        timings = wire.Timings(total_ms=total_ms)
        if kind == "cancelled":
            self.refresh_residency()
            status = "interrupted" if job.interrupted else "cancelled"
            error = wire.ErrorInfo(status, error.message, None)
            self._result(msg.job_id, status, error=error, engine=msg.engine, timings=timings)
            log.info("job=%s %s: %s", msg.job_id, status, error.message)
            return
        if kind == "cuda_fatal":
            self._result(msg.job_id, "failed", error=error, engine=msg.engine, timings=timings)
            log.error("job=%s: CUDA context is poisoned (%s); exiting with %d", msg.job_id, error.message, ExitCode.CUDA_POISONED)
            raise _Stop(ExitCode.CUDA_POISONED)
        if kind == "oom":
            self._consecutive_ooms += 1
            self._free_memory()
            if self._consecutive_ooms >= 2:
                self._unload_all_but(msg.engine)
            self.refresh_residency()
            self._result(msg.job_id, "failed", error=error, engine=msg.engine, timings=timings)
            log.warning("job=%s out of memory (%d in a row): %s", msg.job_id, self._consecutive_ooms, error.message)
            return
        if kind == "internal":  # an unexpected error may leave device memory behind
            self._free_memory()
        self.refresh_residency()
        self._result(msg.job_id, "failed", error=error, engine=msg.engine, timings=timings)
        log.info("job=%s failed: %s: %s", msg.job_id, error.code, error.message)

    def _unload_all_but(self, keep: str) -> None:
        others = [e.engine for e in self.residency.engines if e.engine != keep]
        for engine in others:
            try:
                self.manager.unload(engine)
            except Exception as exc:
                log.warning("unload of %s after repeated OOM failed: %s", engine, exc)
        log.warning("second OOM in a row: unloaded %s", ", ".join(others) or "nothing (no other engine resident)")
        self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            try:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except RuntimeError as exc:  # a poisoned context fails here too; the job result says so
                log.warning("could not free CUDA memory: %s", exc)


def _rgb8(image: Any):
    import numpy as np

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def _classify(errors: Any, exc: BaseException) -> Any:
    try:
        return errors.classify_exception(exc)
    except Exception:
        log.exception("classify_exception failed")
        return errors.WorkerError(f"{type(exc).__name__}: {exc}")


def _kind_of(errors: Any, err: Any) -> str:
    if isinstance(err, errors.JobCancelled):
        return "cancelled"
    if isinstance(err, errors.OutOfMemory):
        return "oom"
    if isinstance(err, errors.CudaFatal):
        return "cuda_fatal"
    if getattr(err, "code", None) == "internal" or type(err) is errors.WorkerError:
        return "internal"
    return "classified"


def build_request(msg: wire.GenerateMessage, references: list[Any]) -> Any:
    """The engine's request: every field the message and GenerateRequest share, by name (a new
    parameter flows through once both declare it), with the decoded reference images."""
    import dataclasses

    from .engines.base import GenerateRequest

    shared = {f.name for f in dataclasses.fields(GenerateRequest)} & {f.name for f in dataclasses.fields(msg)}
    fields = {name: getattr(msg, name) for name in shared if name != "references"}
    fields["guidance"] = float(fields["guidance"])  # JSON writes 4.0 as 4
    return GenerateRequest(**fields, references=references)


# ---- start-up ------------------------------------------------------------------------------------


def _resolve_device(requested: str, rank: int = 0) -> str:
    """The device of this process: the CPU, or ``cuda:<rank>`` (rank 0 of a device group, or a lone
    worker, is cuda:0; CUDA_VISIBLE_DEVICES lists the group's GPUs)."""
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        if rank >= torch.cuda.device_count():
            raise SystemExit(f"rank {rank} of a device group has no GPU: torch sees {torch.cuda.device_count()}")
        torch.cuda.set_device(rank)  # calls without a device (synchronize, empty_cache) mean this one
        return f"cuda:{rank}"
    if requested == "cuda":
        raise SystemExit("FLEXY_WORKER_DEVICE=cuda was requested but torch sees no CUDA device")
    return "cpu"


def _cap_device_memory(device: str, cap_gb: float | None) -> int | None:
    """WORKER_DEVICE_MEMORY_GB: the most device memory (GiB) this worker's allocator may take, as if the
    card were that small (a shared card; the GPU tier's 32 GB run). Returns the cap in bytes."""
    if not cap_gb or not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(index).total_memory
    cap = min(total, int(cap_gb * 1024**3))
    torch.cuda.set_per_process_memory_fraction(cap / total, index)
    return cap


def _default_budget_bytes(device: str, cap: int | None = None) -> int:
    if device.startswith("cuda"):
        import torch

        total = cap or torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory
        return total - max(2 * 1024**3, total // 10)  # headroom for activations and the CUDA context
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)


def open_engine_manager(config: WorkerSettings, group: Any = None) -> tuple[Any, str, int]:
    """The engine manager on this process's device, as the settings describe it: (manager, device,
    budget in bytes). Every rank of a device group (``group``, see group.py) builds the same one and
    joins the group here, once its device is chosen."""
    import diffusers
    import torch

    from .catalog import load_catalog
    from .engines.manager import EngineManager

    _quiet_libraries()
    device = _resolve_device(config.device, config.rank)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if device == "cpu":
        # The worker shares the host's cores with its supervisor, the gateway and Redis; one intra-op
        # thread avoids oversubscription, which slowed demo generations several-fold on 2 cores.
        torch.set_num_threads(config.cpu_threads)
    cap = _cap_device_memory(device, config.device_memory_gb)
    budget = int(config.vram_budget_gb * 1024**3) if config.vram_budget_gb else _default_budget_bytes(device, cap)
    catalog = load_catalog(config.engine_catalog)
    log.info("starting: device=%s dtype=%s budget=%.1f GiB models=%s catalog=%s text_encoder=%s torch=%s diffusers=%s%s%s",
             device, str(dtype).removeprefix("torch."), budget / 1024**3, config.models_dir, catalog.source,
             config.text_encoder, torch.__version__, diffusers.__version__,
             f" rank={config.rank}/{config.world_size}" if group is not None else "",
             " FAULTS ARMED" if Faults.from_settings(config).any() else "")  # fmt: skip
    if device.startswith("cuda"):
        log.info("cuda device: %s%s", torch.cuda.get_device_name(device), f" (capped to {cap / 1024**3:.1f} GiB)" if cap else "")

    kwargs = dict(catalog=catalog, models_dir=config.models_dir, device=device, dtype=dtype, budget_bytes=budget,
                  text_encoder_mode=config.text_encoder, remote_url=config.text_encoder_url, remote_token=config.hf_token,
                  fast_paths=_fast_paths(config))  # fmt: skip
    if group is None:
        manager = EngineManager(**kwargs)
    else:
        from .engines.parallel import GroupEngineManager

        group.join(device)
        manager = GroupEngineManager(group, **kwargs)
    manager.keep_resident = config.preload  # fast paths that grow an engine must fit beside these
    return manager, device, budget


def main(config: WorkerSettings, proto_out: Any, proto_in: Any) -> int:
    """Run the worker; ``proto_out``/``proto_in`` are the binary protocol streams. Returns the exit code."""
    faults = Faults.from_settings(config)
    worker = Worker(None, wire.FrameWriter(proto_out), device=config.device, faults=faults, budget_bytes=0, errors=None,
                    eof_grace_s=config.eof_grace_s)
    worker.preload, worker.engine_check_s = tuple(config.preload), config.engine_check_s
    signal.signal(signal.SIGTERM, worker.on_signal)
    signal.signal(signal.SIGINT, worker.on_signal)  # Ctrl-C in a terminal: the same orderly stop
    # The reader starts before the slow imports: pings are answered and a dead supervisor is noticed
    # during start-up too.
    threading.Thread(target=worker.read_loop, args=(wire.FrameReader(proto_in),), name="frame-reader", daemon=True).start()
    group = None
    if config.world_size > 1:
        from .group import DeviceGroup

        group = DeviceGroup.spawn(config)  # the other ranks import while this one does

    import diffusers
    import torch

    from . import errors

    if config.standby and group is None:
        # A spare: pay for every import now, touch the device only once the supervisor needs it.
        from .catalog import load_catalog

        _quiet_libraries()
        _import_pipelines(load_catalog(config.engine_catalog), config.models_dir)
        if not worker.wait_for_start():
            log.info("stopped in standby")
            return ExitCode.OK
    manager, device, budget = open_engine_manager(config, group)
    worker.attach(manager, errors, device, budget)
    for engine in config.preload:
        if worker.stop_requested():
            break
        code = _preload(manager, engine, errors, faults)
        if code is not None:
            return code
    if worker.stop_requested():  # shutdown, SIGTERM during start-up: no point announcing readiness
        log.info("stopped before ready")
        return ExitCode.OK
    worker.refresh_engines()
    worker.refresh_residency()
    worker.send(wire.ReadyMessage(
        protocol=wire.PROTOCOL_VERSION,
        pid=os.getpid(),
        device=device,
        torch_version=torch.__version__,
        diffusers_version=diffusers.__version__,
        engines=list(worker.engine_info.values()),
        residency=worker.residency,
    ))
    worker.ready_sent = True
    log.info("ready: engines %s", ", ".join(
        f"{e.engine}[{e.weights}{'' if e.state == 'available' else ', unavailable: ' + (e.reason or '')}]" for e in worker.engine_info.values()
    ) or "none")
    code = worker.serve()
    if group is not None:
        group.close()
    log.info("exiting with %d", code)
    return code


def _fast_paths(config: WorkerSettings) -> dict[str, Any]:
    """FLEXY_FAST_PATH parsed (its option vocabulary belongs to acceleration.py), with the compile cache
    and the FP8 attention loader it may use. Imports the GPU modules only when a fast path is set."""
    if config.fp8_attn_loader:
        from .fp8_attention import force_loader

        force_loader(config.fp8_attn_loader)
    if not config.fast_path:
        return {}
    from . import acceleration

    if config.compile_cache:
        acceleration.configure_compile_cache(config.compile_cache)
    try:
        return acceleration.parse_fast_path(config.fast_path)
    except ValueError as exc:
        raise SettingsError([f"FLEXY_FAST_PATH: {exc}"]) from None


def _quiet_libraries() -> None:
    """Library progress bars and chatter would break the one-line-per-event log on stderr."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except Exception:  # cosmetics only
        pass


def _import_pipelines(catalog: Any, models_dir: Path) -> None:
    """Imports the pipeline and component classes of every snapshot here (most of a load's first cost)."""
    import importlib
    import json

    import diffusers

    started = time.perf_counter()
    for spec in catalog:
        index = models_dir / spec.local_dir / "model_index.json"
        if not index.exists():
            continue
        try:
            getattr(diffusers, spec.pipeline_class)
            for name, value in json.loads(index.read_text(encoding="utf-8")).items():
                if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0]:
                    getattr(importlib.import_module(value[0]), value[1], None)
        except Exception as exc:  # the real load reports it properly
            log.debug("pre-import for %s failed: %s", spec.id, exc)
    log.info("pipeline classes imported in %.0f ms", (time.perf_counter() - started) * 1000)


def _preload(manager: Any, engine: str, errors: Any, faults: Faults) -> int | None:
    started = time.perf_counter()
    try:
        faults.fire_on_preload(engine)
        manager.load(engine)
    except Exception as exc:
        err = exc if isinstance(exc, errors.WorkerError) else _classify(errors, exc)
        if isinstance(err, errors.OutOfMemory):
            log.error("out of memory while preloading %s: %s; exiting with %d", engine, err, ExitCode.PRELOAD_OOM)
            return ExitCode.PRELOAD_OOM
        if isinstance(err, errors.CudaFatal):
            log.error("CUDA failed while preloading %s: %s; exiting with %d", engine, err, ExitCode.CUDA_POISONED)
            return ExitCode.CUDA_POISONED
        log.warning("preload of %s failed (%s); serving without it", engine, err)
        return None
    log.info("preloaded %s in %.0f ms", engine, (time.perf_counter() - started) * 1000)
    return None
