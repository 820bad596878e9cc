"""Which pipeline components sit on the device, within a byte budget.

A component is one weight-bearing module of a pipeline (transformer, VAE, a text encoder). It is
identified by the sha256 of its weight files, not by its name, so two engines whose snapshots
carry identical files (FLUX.1 and SD3 both ship T5-XXL and CLIP-L) hold one copy:

* same class: the second pipeline receives the first one's module object as a from_pretrained
  override and never loads its own;
* different class over the same files (FLUX.1 reads CLIP-L as CLIPTextModel, SD3 as
  CLIPTextModelWithProjection): the second module is loaded, then its tensors are re-pointed at
  the first module's tensors by parameter name, and only what it has beyond them stays its own.

When an engine needs the device and the budget is short, the least recently used components of
other engines move to host memory (pinned when CUDA is present) instead of being dropped, so
bringing them back is one host-to-device copy. On a CPU-only machine the device is the CPU: the
moves are no-ops but the accounting is the same, which is what lets tests watch evictions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEVICE = "device"
HOST = "host"

# (path, size, mtime_ns) -> sha256; real checkpoints are many GB, hash each file once per process.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(cache_key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(8 << 20), b""):
                hasher.update(chunk)
        digest = _FILE_DIGESTS[cache_key] = hasher.hexdigest()
    return digest


def weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The safetensors files from_pretrained will read in folder, for that variant."""
    files = sorted(folder.glob("*.safetensors"))
    if variant:
        marked = [f for f in files if f".{variant}." in f.name or f".{variant}-" in f.name]
        if marked:
            return marked
    return [f for f in files if not any(f".{tag}." in f.name for tag in ("fp16", "bf16", "fp32"))] or files


def content_key(
    folder: Path, variant: str | None = None, known_digests: dict[Path, tuple[int, str]] | None = None
) -> str | None:
    """sha256 over the sorted digests of a component's weight files; names do not count, bytes do.
    known_digests (path -> (size, sha256), from the download manifest) spares hashing files whose
    size still matches."""
    files = weight_files(folder, variant)
    if not files:
        return None
    known_digests = known_digests or {}

    def digest(path: Path) -> str:
        known = known_digests.get(path)
        if known is not None and known[0] == path.stat().st_size:
            return known[1]
        return file_sha256(path)

    digests = sorted(digest(f) for f in files)
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


# Keys of config.json that name tools and versions rather than the architecture.
_CONFIG_NOISE = {"_name_or_path", "_diffusers_version", "transformers_version", "architectures", "dtype", "torch_dtype"}


def config_digest(folder: Path) -> str | None:
    """sha256 of a component's config.json without its tool/version keys: identical weights are only
    the same module when the architecture around them is the same too."""
    path = folder / "config.json"
    if not path.exists():
        return None
    config = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k not in _CONFIG_NOISE}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _own_tensors(module: torch.nn.Module):
    """(owning submodule, slot dict, attribute name, qualified name) for every parameter and buffer."""
    for prefix, submodule in module.named_modules(remove_duplicate=False):
        for slots in (submodule._parameters, submodule._buffers):
            for name, tensor in slots.items():
                if tensor is not None:
                    yield submodule, slots, name, f"{prefix}.{name}" if prefix else name


def storage_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of the distinct storages behind these modules (tied or shared tensors count once)."""
    seen: dict[tuple[str, int], int] = {}
    for module in modules:
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            storage = tensor.untyped_storage()
            seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def _module_device(module: torch.nn.Module) -> torch.device | None:
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


@dataclass
class Component:
    key: str
    primary: torch.nn.Module
    aliases: list[torch.nn.Module] = field(default_factory=list)
    nbytes: int = 0
    location: str = HOST
    last_used: int = 0
    users: dict[str, set[str]] = field(default_factory=dict)  # engine -> component names there
    configs: dict[int, str | None] = field(default_factory=dict)  # id(module) -> config digest

    def modules(self) -> list[torch.nn.Module]:
        return [self.primary, *self.aliases]


class ResidencyManager:
    def __init__(self, device: str | torch.device, budget_bytes: int, pin_host_memory: bool | None = None):
        self.device = torch.device(device)
        self.host = torch.device("cpu")
        self.budget_bytes = int(budget_bytes)
        # Pinned host memory only pays off (and only works) with a CUDA device to copy to.
        self.pin_host_memory = (
            self.device.type == "cuda" and torch.cuda.is_available() if pin_host_memory is None else pin_host_memory
        )
        self._components: dict[str, Component] = {}
        self._engines: dict[str, dict[str, str]] = {}  # engine -> component name -> key
        self._clock = itertools.count(1)
        self.last_load_ms: float | None = None
        self.last_swap_ms: float | None = None
        self.evictions = 0

    # ---- identity -----------------------------------------------------------------------------

    def shareable(self, key: str | None, cls: type, config: str | None) -> torch.nn.Module | None:
        """A resident module with these weights, exactly this class and this config digest, to pass
        to from_pretrained as an override."""
        component = self._components.get(key) if key else None
        if component is None:
            return None
        for module in component.modules():
            if type(module) is cls and config is not None and component.configs.get(id(module)) == config:
                return module
        return None

    def known(self, key: str | None) -> bool:
        return bool(key) and key in self._components

    # ---- registration -------------------------------------------------------------------------

    def attach(
        self, engine: str, name: str, module: torch.nn.Module, key: str | None, config: str | None = None
    ) -> Component:
        """Record that engine's pipeline uses module as component name (config: its config digest)."""
        key = key or f"unique:{engine}/{name}"
        component = self._components.get(key)
        if component is None:
            component = Component(key=key, primary=module)
            component.location = DEVICE if self._on_device(module) else HOST
            self._components[key] = component
        elif module is not component.primary and not any(module is alias for alias in component.aliases):
            self._tie(module, component.primary, self._target(component.location))
            component.aliases.append(module)
        component.configs.setdefault(id(module), config)
        component.nbytes = storage_bytes(component.modules())
        component.users.setdefault(engine, set()).add(name)
        component.last_used = next(self._clock)
        self._engines.setdefault(engine, {})[name] = key
        return component

    def detach(self, engine: str) -> list[str]:
        """Forget engine; components no other engine uses are dropped. Returns the dropped keys."""
        dropped = []
        for name, key in self._engines.pop(engine, {}).items():
            component = self._components.get(key)
            if component is None:
                continue
            component.users.pop(engine, None)
            if not component.users:
                dropped.append(key)
                del self._components[key]
        return dropped

    def engines(self) -> list[str]:
        return list(self._engines)

    def components_of(self, engine: str) -> dict[str, Component]:
        return {name: self._components[key] for name, key in self._engines.get(engine, {}).items()}

    # ---- placement ----------------------------------------------------------------------------

    def device_bytes_used(self) -> int:
        return sum(c.nbytes for c in self._components.values() if c.location == DEVICE)

    def reserve(self, nbytes: int, keep: str | None = None) -> None:
        """Evict least recently used components (not engine keep's) until nbytes more fit."""
        protected = set(self._engines.get(keep, {}).values()) if keep else set()
        candidates = sorted(
            (c for c in self._components.values() if c.location == DEVICE and c.key not in protected),
            key=lambda c: c.last_used,
        )
        for component in candidates:
            if self.device_bytes_used() + nbytes <= self.budget_bytes:
                break
            self._move(component, HOST)
            self.evictions += 1
            log.info("evicted %s (%.1f MB) to host", self._describe(component), component.nbytes / 1e6)

    def activate(self, engine: str) -> float:
        """Put every component of engine on the device, evicting others as needed; returns ms spent."""
        started = time.perf_counter()
        components = list(self.components_of(engine).values())
        missing = [c for c in components if c.location != DEVICE]
        if missing:
            self.reserve(sum(c.nbytes for c in missing), keep=engine)
            if self.device_bytes_used() + sum(c.nbytes for c in missing) > self.budget_bytes:
                log.warning("%s needs more than the device budget allows; loading it anyway", engine)
            for component in missing:
                self._move(component, DEVICE)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        for component in components:
            component.last_used = next(self._clock)
        return (time.perf_counter() - started) * 1000 if missing else 0.0

    def evict_all(self, keep: str | None = None) -> None:
        """Move every component not used by keep to host memory (after an out-of-memory error)."""
        protected = set(self._engines.get(keep, {}).values()) if keep else set()
        for component in self._components.values():
            if component.location == DEVICE and component.key not in protected:
                self._move(component, HOST)
                self.evictions += 1

    def location_of(self, engine: str) -> str:
        components = self.components_of(engine).values()
        return DEVICE if components and all(c.location == DEVICE for c in components) else HOST

    def engine_bytes(self, engine: str) -> int:
        return sum(c.nbytes for c in self.components_of(engine).values())

    def report(self) -> dict:
        return {
            "engines": [
                {"engine": engine, "location": self.location_of(engine), "bytes": self.engine_bytes(engine)}
                for engine in self._engines
            ],
            "device_bytes_used": self.device_bytes_used(),
            "device_budget_bytes": self.budget_bytes,
            "last_load_ms": None if self.last_load_ms is None else round(self.last_load_ms, 3),
            "last_swap_ms": None if self.last_swap_ms is None else round(self.last_swap_ms, 3),
        }

    # ---- moving -------------------------------------------------------------------------------

    def _target(self, location: str) -> torch.device:
        return self.device if location == DEVICE else self.host

    def _on_device(self, module: torch.nn.Module) -> bool:
        # On a CPU-only machine freshly loaded modules count as host until activated, so the budget
        # is checked on the way in exactly as it is on a GPU.
        device = _module_device(module)
        return self.device.type != "cpu" and device is not None and device == self.device

    def _move(self, component: Component, location: str) -> None:
        target = self._target(location)
        component.primary.to(target)
        if location == HOST and self.pin_host_memory:
            self._pin(component.primary)
        for alias in component.aliases:
            self._tie(alias, component.primary, target)
        component.location = location

    @staticmethod
    def _pin(module: torch.nn.Module) -> None:
        for _, slots, name, _ in _own_tensors(module):
            tensor = slots[name]
            # Quantized parameter types (bitsandbytes) carry state beside .data; leave them unpinned.
            if tensor.device.type == "cpu" and not tensor.is_pinned() and type(tensor) in (torch.nn.Parameter, torch.Tensor):
                tensor.data = tensor.data.pin_memory()

    @staticmethod
    def _tie(module: torch.nn.Module, source: torch.nn.Module, target: torch.device) -> None:
        """Point module's tensors at source's tensors of the same name, shape and dtype; move the rest.

        Names are matched on their dotted suffix, because one class may nest the weights under a
        prefix the other lacks (transformers 5's CLIPTextModel holds `embeddings.*` where
        CLIPTextModelWithProjection holds `text_model.embeddings.*`); a suffix must be unambiguous.
        """
        by_suffix: dict[str, list[torch.Tensor]] = {}
        for _, slots, name, qualified in _own_tensors(source):
            parts = qualified.split(".")
            for start in range(len(parts)):
                by_suffix.setdefault(".".join(parts[start:]), []).append(slots[name])
        for _, slots, name, qualified in _own_tensors(module):
            tensor = slots[name]
            parts = qualified.split(".")
            match = None
            for start in range(len(parts)):
                candidates = by_suffix.get(".".join(parts[start:]), [])
                distinct = {c.data_ptr(): c for c in candidates}
                if len(distinct) == 1:
                    match = next(iter(distinct.values()))
                    break
                if len(distinct) > 1:
                    break
            if match is not None and match.shape == tensor.shape and match.dtype == tensor.dtype:
                tensor.data = match.data
            elif tensor.device != target:
                tensor.data = tensor.data.to(target)

    def _describe(self, component: Component) -> str:
        users = ", ".join(f"{engine}.{'/'.join(sorted(names))}" for engine, names in component.users.items())
        return f"{users} [{component.key[:19]}]"
