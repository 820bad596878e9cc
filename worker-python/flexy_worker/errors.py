"""Failure classes the worker reports, with the codes of ErrorCode in the wire protocol.

The supervisor acts on the code: bad_input is never retried, oom is retried once at most,
cuda_fatal restarts the worker, cancelled is a normal end (a user asked for it), interrupted puts
the job back in the queue (the worker stopped it for a shutdown, a signal or a lost supervisor).
"""

from __future__ import annotations

import torch

ERROR_CODES = (
    "bad_input",
    "oom",
    "cancelled",
    "interrupted",
    "engine_unavailable",
    "text_encoder_unavailable",
    "cuda_fatal",
    "internal",
)


class WorkerError(Exception):
    """An error with a protocol code and, for bad input, the request field at fault."""

    code: str = "internal"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_wire(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class BadInput(WorkerError):
    code = "bad_input"


class JobCancelled(WorkerError):
    code = "cancelled"


class EngineUnavailable(WorkerError):
    code = "engine_unavailable"


class TextEncoderUnavailable(WorkerError):
    code = "text_encoder_unavailable"


class OutOfMemory(WorkerError):
    code = "oom"


class CudaFatal(WorkerError):
    code = "cuda_fatal"


# Messages that mean the CUDA context can no longer be trusted; the process must exit.
_CUDA_FATAL_MARKERS = (
    "illegal memory access",
    "unspecified launch failure",
    "launch failure",
    "uncorrectable ecc error",
    "ecc error",
    "device-side assert",
    "misaligned address",
    "illegal instruction",
    "cuda error: an illegal",
)

_OOM_MARKERS = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "can't allocate memory",  # the CPU allocator's wording
)


def classify_exception(exc: BaseException) -> WorkerError:
    """Map any exception from loading or generating to the WorkerError the supervisor acts on."""
    if isinstance(exc, WorkerError):
        return exc
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return OutOfMemory(f"out of device memory: {exc}")
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"out of host memory: {exc}")
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and any(marker in text for marker in _OOM_MARKERS):
        return OutOfMemory(f"out of memory: {exc}")
    if isinstance(exc, RuntimeError) and any(marker in text for marker in _CUDA_FATAL_MARKERS):
        return CudaFatal(f"CUDA context poisoned: {exc}")
    return WorkerError(f"{type(exc).__name__}: {exc}")
