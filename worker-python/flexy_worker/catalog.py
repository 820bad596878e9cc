"""The engine catalog as the worker sees it.

The TypeScript table in libs/engines/src/catalog.ts is the single source of truth; this module only
reads the JSON generated from it (libs/engines/engine-catalog.json) and never restates its values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOG_ENV = "FLEXY_ENGINE_CATALOG"
_REPO_CATALOG = Path(__file__).resolve().parents[2] / "libs" / "engines" / "engine-catalog.json"


@dataclass(frozen=True)
class Range:
    min: float
    max: float

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True)
class EngineLimits:
    size_multiple: int
    min_side: int
    max_side: int
    max_pixels: int
    steps: Range
    guidance: Range
    max_prompt_chars: int
    negative_prompt: bool
    max_references: int
    max_images: int


@dataclass(frozen=True)
class EngineDefaults:
    steps: int
    guidance: float
    width: int
    height: int


@dataclass(frozen=True)
class TextEncoderSpec:
    modes: tuple[str, ...]
    default: str
    remote_url: str


@dataclass(frozen=True)
class EngineSpec:
    id: str
    label: str
    hub_repo: str
    revision: str
    pipeline_class: str
    local_dir: str
    memory_estimate_gb: float
    defaults: EngineDefaults
    limits: EngineLimits
    text_encoder: TextEncoderSpec | None


def _engine_from_json(raw: dict[str, Any]) -> EngineSpec:
    limits = raw["limits"]
    text_encoder = raw.get("textEncoder")
    return EngineSpec(
        id=raw["id"],
        label=raw["label"],
        hub_repo=raw["hubRepo"],
        revision=raw["revision"],
        pipeline_class=raw["pipelineClass"],
        local_dir=raw["localDir"],
        memory_estimate_gb=float(raw["memoryEstimateGb"]),
        defaults=EngineDefaults(**raw["defaults"]),
        limits=EngineLimits(
            size_multiple=int(limits["sizeMultiple"]),
            min_side=int(limits["minSide"]),
            max_side=int(limits["maxSide"]),
            max_pixels=int(limits["maxPixels"]),
            steps=Range(**limits["steps"]),
            guidance=Range(**limits["guidance"]),
            max_prompt_chars=int(limits["maxPromptChars"]),
            negative_prompt=bool(limits["negativePrompt"]),
            max_references=int(limits["maxReferences"]),
            max_images=int(limits["maxImages"]),
        ),
        text_encoder=(
            TextEncoderSpec(
                modes=tuple(text_encoder["modes"]),
                default=text_encoder["default"],
                remote_url=text_encoder["remoteUrl"],
            )
            if text_encoder
            else None
        ),
    )


@dataclass(frozen=True)
class Catalog:
    engines: dict[str, EngineSpec]
    source: Path
    # Rules every engine shares (libs/contracts/src/generation.ts), e.g. the seed range.
    seed: Range

    def __getitem__(self, engine_id: str) -> EngineSpec:
        return self.engines[engine_id]

    def __contains__(self, engine_id: object) -> bool:
        return engine_id in self.engines

    def __iter__(self):
        return iter(self.engines.values())

    def ids(self) -> list[str]:
        return list(self.engines)


def catalog_path() -> Path:
    """FLEXY_ENGINE_CATALOG when set (containers), else the generated file of this checkout."""
    override = os.environ.get(CATALOG_ENV)
    return Path(override) if override else _REPO_CATALOG


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    source = Path(path) if path is not None else catalog_path()
    with open(source, encoding="utf-8") as handle:
        raw = json.load(handle)
    engines = {engine_id: _engine_from_json(spec) for engine_id, spec in raw["engines"].items()}
    return Catalog(engines=engines, source=source, seed=Range(**raw["request"]["seed"]))
