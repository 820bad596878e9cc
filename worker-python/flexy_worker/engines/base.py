"""The request, progress and result types the worker loop exchanges with the engine manager."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy
import PIL.Image


@dataclass
class GenerateRequest:
    job_id: str
    engine: str
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    num_images: int = 1
    references: list[PIL.Image.Image] = field(default_factory=list)
    preview_every: int = 0


@dataclass
class StepEvent:
    step: int
    total_steps: int
    elapsed_ms: float
    preview: numpy.ndarray | None  # HxWx3 uint8, at most 64 px a side, or None


@dataclass
class GenerateOutput:
    images: list[numpy.ndarray]  # HxWx3 uint8 RGB
    timings: dict[str, float]  # load_ms, text_encode_ms, denoise_ms, decode_ms, total_ms
    weights: str  # "demo" | "random" | "hub"
    revision: str
