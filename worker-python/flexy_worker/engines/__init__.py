"""Engines: the catalog's diffusers pipelines, run from local snapshots."""

from .base import GenerateOutput, GenerateRequest, StepEvent
from .manager import EngineManager

__all__ = ["EngineManager", "GenerateOutput", "GenerateRequest", "StepEvent"]
