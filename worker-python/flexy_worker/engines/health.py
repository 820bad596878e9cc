"""Health per engine: one engine's bad files make that engine unavailable, not the worker.

An engine is ``available`` until loading it fails (its files do not match their manifest, diffusers
cannot build it, its canary generation fails) or a periodic check finds its files changed. It is then
``unavailable`` with the reason, and jobs for it fail at once with ``engine_unavailable`` while the
other engines keep serving. After a backoff (5 s, doubling up to 5 min) it is tried again: the files
are checked and, if they pass, the engine is available again (the next job, or the preload, loads it).
A successful load clears the backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0


@dataclass
class EngineHealth:
    engine: str
    state: str = "available"  # "available" | "unavailable"
    reason: str | None = None
    #: Failed tries in a row; sets the backoff.
    failures: int = 0
    #: When the engine is tried again (seconds since the epoch), while unavailable.
    retry_at: float | None = None


class HealthBook:
    def __init__(self, engines: Iterable[str], *, first_retry_s: float = FIRST_RETRY_S, max_retry_s: float = MAX_RETRY_S,
                 clock: Callable[[], float] = time.time):  # fmt: skip
        self._engines = {engine: EngineHealth(engine) for engine in engines}
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._clock = clock

    def __getitem__(self, engine: str) -> EngineHealth:
        return self._engines.setdefault(engine, EngineHealth(engine))

    def failed(self, engine: str, reason: str) -> EngineHealth:
        """Loading or checking failed: unavailable with this reason until the next try."""
        health = self[engine]
        health.failures += 1
        delay = min(self._first_retry_s * 2 ** (health.failures - 1), self._max_retry_s)
        health.state, health.reason, health.retry_at = "unavailable", reason, self._clock() + delay
        return health

    def loaded(self, engine: str) -> None:
        """Loaded and passed its canary: available, backoff cleared."""
        self._engines[engine] = EngineHealth(engine)

    def retrying(self, engine: str) -> None:
        """Its files pass again: available for the next try (the backoff stays until a load succeeds)."""
        health = self[engine]
        health.state, health.reason, health.retry_at = "available", None, None

    def refusal(self, engine: str) -> str | None:
        """Why a job for engine must fail now, or None when it may run (available, or its retry is due)."""
        health = self[engine]
        if health.state == "available" or (health.retry_at is not None and self._clock() >= health.retry_at):
            return None
        wait = max(0.0, (health.retry_at or 0) - self._clock())
        return f"{engine} is unavailable: {health.reason} (tried again in {wait:.0f} s)"

    def due(self) -> list[str]:
        """Unavailable engines whose retry time has come."""
        now = self._clock()
        return [h.engine for h in self._engines.values() if h.state == "unavailable" and h.retry_at is not None and now >= h.retry_at]

    def report(self) -> list[EngineHealth]:
        return [EngineHealth(**vars(h)) for h in self._engines.values()]
