"""The worker's settings: one pydantic-settings model, read once at start from the process environment.

The environment is the worker's one channel of settings. The supervisor validates them against the
service's schema (``libs/config/src/settings.ts``) and hands each worker its own (``MODELS_DIR``,
``FLEXY_WORKER_DEVICE``, ``WORKER_PRELOAD``, …); run by hand, the worker reads the same variables.
Defaults, bounds and choices are not restated here: they come from ``libs/config/worker-settings.json``,
generated from that schema (``npm run build``), as the engine catalog is.

Usage::

    settings = load_settings()          # raises SettingsError naming each bad variable
    settings.models_dir, settings.preload, settings.fault_oom, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "libs" / "config" / "worker-settings.json"
_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["schema"]
_PROPERTIES: dict[str, dict[str, Any]] = _SCHEMA["properties"]

# JSON Schema keyword -> pydantic Field constraint
_BOUNDS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt", "pattern": "pattern"}


def _setting(name: str, *, required: bool = False) -> Any:
    """The field reading variable ``name``, with the default and bounds the schema gives it."""
    spec = _PROPERTIES[name]
    kwargs: dict[str, Any] = {"validation_alias": name, "description": spec.get("description")}
    if not required:
        default = spec.get("default")
        kwargs["default"] = tuple(default) if isinstance(default, list) else default
    kwargs.update({_BOUNDS[key]: value for key, value in spec.items() if key in _BOUNDS})
    return Field(**kwargs)


def _one_of(name: str) -> AfterValidator:
    """The schema's choices for ``name`` (or for each item of a list)."""
    spec = _PROPERTIES[name]
    choices = tuple(spec.get("enum") or spec.get("items", {}).get("enum") or ())

    def check(value: Any) -> Any:
        values = value if isinstance(value, tuple) else (value,)
        bad = [v for v in values if v is not None and v not in choices]
        if bad:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


EngineList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class WorkerSettings(BaseSettings):
    """Everything the worker process reads from its environment, typed and checked once."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    models_dir: Path = _setting("MODELS_DIR", required=True)
    engine_catalog: Path | None = _setting("FLEXY_ENGINE_CATALOG")
    device: Annotated[str, _one_of("FLEXY_WORKER_DEVICE")] = _setting("FLEXY_WORKER_DEVICE")
    world_size: int = _setting("FLEXY_WORKER_WORLD_SIZE")  # a device group's processes (group.py)
    rank: int = _setting("FLEXY_WORKER_RANK")
    preload: Annotated[EngineList, _one_of("WORKER_PRELOAD")] = _setting("WORKER_PRELOAD")
    vram_budget_gb: float | None = _setting("WORKER_VRAM_BUDGET_GB")
    device_memory_gb: float | None = _setting("WORKER_DEVICE_MEMORY_GB")
    text_encoder: Annotated[str, _one_of("FLUX2_TEXT_ENCODER")] = _setting("FLUX2_TEXT_ENCODER")
    text_encoder_url: str | None = _setting("FLEXY_TEXT_ENCODER_URL")
    hf_token: str | None = Field(default=None, validation_alias="HF_TOKEN", repr=False)
    cpu_threads: int = _setting("FLEXY_CPU_THREADS")
    fast_path: str | None = _setting("FLEXY_FAST_PATH")
    compile_cache: Path | None = _setting("FLEXY_COMPILE_CACHE")
    fp8_attn_loader: Annotated[str | None, _one_of("FLEXY_FP8_ATTN_LOADER")] = _setting("FLEXY_FP8_ATTN_LOADER")
    log_level: Annotated[str, _one_of("FLEXY_WORKER_LOG_LEVEL")] = _setting("FLEXY_WORKER_LOG_LEVEL")
    eof_grace_s: float = _setting("FLEXY_WORKER_EOF_GRACE_S")
    standby: bool = _setting("FLEXY_WORKER_STANDBY")
    engine_check_s: float = _setting("FLEXY_ENGINE_CHECK_SECONDS")
    # fault injection (test hooks, see worker.py): unset in production
    fault_oom: str | None = _setting("FLEXY_FAULT_OOM_ON_JOB")
    fault_cuda_fatal: str | None = _setting("FLEXY_FAULT_CUDA_FATAL_ON_JOB")
    fault_hang: str | None = _setting("FLEXY_FAULT_HANG_ON_JOB")
    fault_exit: str | None = _setting("FLEXY_FAULT_EXIT_ON_JOB")
    fault_preload_oom: Annotated[str | None, _one_of("FLEXY_FAULT_OOM_ON_PRELOAD")] = _setting("FLEXY_FAULT_OOM_ON_PRELOAD")


class SettingsError(Exception):
    """Settings that do not pass: one line per problem, each naming its variable."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings() -> WorkerSettings:
    """The worker's settings from the process environment; SettingsError names each bad variable."""
    try:
        return WorkerSettings()
    except ValidationError as exc:
        raise SettingsError([_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else "settings"
    message = "must be set" if error["type"] == "missing" else str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    got = "" if not isinstance(value, str) or name == "HF_TOKEN" else f" (got {value!r})"
    return f"{name}: {message}{got}"
