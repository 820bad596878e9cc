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

Moves use flat buffers (`flat_buffers`, on by default whenever the device is not the CPU): an
evicted component's bytes go into one host buffer kept for that component (allocated on its first
eviction, reused by every later one), and a swap-in allocates one device buffer for the whole
component and fills it with one copy; every parameter, buffer and bitsandbytes quantization-state
tensor is then re-pointed at a view of that buffer. A component of a few hundred small tensors (CLIP,
a VAE) thus moves at the bandwidth of one large copy, tied tensors stay tied (they view the same
bytes) and Parameter objects stay the same objects.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
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


def _is_quant_state(value: object) -> bool:
    # bitsandbytes' QuantState, recognised by name so that bitsandbytes is only imported by those using it.
    return type(value).__name__ == "QuantState" and hasattr(value, "absmax")


def _state_tensors(state: object, seen: set[int]) -> Iterator[tuple[torch.Tensor, object, str]]:
    """(tensor, owner, attribute) for the tensors of a quantization state and its nested states
    (QuantState: absmax, code, offset, state2.absmax, state2.code, and whatever else it holds)."""
    if id(state) in seen:
        return
    seen.add(id(state))
    for attr, value in list(vars(state).items()):
        if isinstance(value, torch.Tensor):
            yield value, state, attr
        elif _is_quant_state(value):
            yield from _state_tensors(value, seen)


def _held_tensors(modules: list[torch.nn.Module]) -> Iterator[tuple[torch.Tensor, object | None, str | None]]:
    """Every tensor these modules need on their device, once each: (tensor, None, None) for parameters
    and buffers, which are re-pointed through .data (the Parameter object, with its attributes, stays);
    (tensor, owner, attribute) for tensors held beside them, re-pointed by setattr: bitsandbytes
    Params4bit keeps its packed weight's absmax/code/offset in a QuantState, which Linear4bit also
    references, and tensor attributes of other Parameter subclasses (Int8Params' CB/SCB)."""
    seen_tensors: set[int] = set()
    seen_states: set[int] = set()
    for module in modules:
        for submodule in module.modules():
            for slots in (submodule._parameters, submodule._buffers):
                for tensor in slots.values():
                    if tensor is None or id(tensor) in seen_tensors:
                        continue
                    seen_tensors.add(id(tensor))
                    yield tensor, None, None
                    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
                        for attr, value in list(vars(tensor).items()):
                            if isinstance(value, torch.Tensor):
                                yield value, tensor, attr
                            elif _is_quant_state(value):
                                yield from _state_tensors(value, seen_states)
            state = submodule.__dict__.get("quant_state")  # Linear4bit's reference to its weight's state
            if _is_quant_state(state):
                yield from _state_tensors(state, seen_states)


def storage_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of the distinct storages behind these modules, quantization state included (tied or
    shared tensors, and tensors viewing one flat buffer, count once)."""
    seen: dict[tuple[str, int], int] = {}
    for held, _, _ in _held_tensors(modules):
        for tensor in _inner_tensors(held):
            storage = tensor.untyped_storage()
            seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def _inner_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors with storage behind tensor: itself, or for a wrapper subclass without storage of
    its own (torchao's Float8Tensor) the tensors it flattens to."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is None:
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [t for name in names for t in _inner_tensors(getattr(tensor, name))]


# Every region of a flat buffer starts on this boundary, so each view keeps the alignment its
# kernels expect (vectorised loads; inductor copies inputs that are not 16-byte aligned).
ALIGN = 256


def _round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


_WRAPPER_TYPES: dict[type, bool] = {}


def _flat_movable(tensor: torch.Tensor) -> bool:
    # Dense strided tensors with a real storage; wrapper subclasses (DTensor, torchao) and meta
    # tensors go the per-tensor way.
    cls = type(tensor)
    wrapper = _WRAPPER_TYPES.get(cls)
    if wrapper is None:
        wrapper = _WRAPPER_TYPES[cls] = hasattr(cls, "__tensor_flatten__")
    return not wrapper and tensor.layout == torch.strided and not tensor.is_meta and not tensor.is_quantized


@dataclass
class _Region:
    """Bytes [lo, hi) of one source storage, copied to [offset, offset + hi - lo) of the flat buffer."""

    storage: torch.UntypedStorage
    lo: int
    hi: int
    offset: int = 0


@dataclass
class _FlatPlan:
    regions: list[_Region]
    # (tensor, owner, attribute, where its first element goes in the flat buffer, in bytes; -1: empty)
    views: list[tuple[torch.Tensor, object | None, str | None, int]]
    nbytes: int


def _flat_plan(modules: list[torch.nn.Module]) -> _FlatPlan | None:
    """Where every tensor of modules goes in one flat buffer; None when one cannot go there.

    A tensor keeps its place relative to the other tensors of its storage (tied tensors and views
    stay tied), but only the byte ranges tensors use are copied: the live ranges of each storage are
    merged into regions, and the regions are laid end to end at ALIGN boundaries. A component that
    already sits in one flat buffer is one region: one copy."""
    held = list(_held_tensors(modules))
    # This runs on every move, a few microseconds a tensor for thousands of tensors: kept lean.
    extents: dict[tuple[torch.device, int], list[tuple[int, int, int]]] = {}  # storage -> (start, end, index)
    storages: dict[tuple[torch.device, int], torch.UntypedStorage] = {}
    for index, (tensor, _, _) in enumerate(held):
        if not _flat_movable(tensor):
            return None
        numel = tensor.numel()
        if numel == 0:
            continue
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        itemsize = tensor.element_size()
        start = tensor.storage_offset() * itemsize
        if tensor.is_contiguous():
            end = start + numel * itemsize
        else:
            end = start + (1 + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride()))) * itemsize
        spans = extents.get(key)
        if spans is None:
            spans = extents[key] = []
            storages[key] = storage
        spans.append((start, end, index))
    regions: list[_Region] = []
    placed: dict[int, tuple[_Region, int]] = {}  # index -> (region, byte offset of the tensor's start)
    offset = 0
    for key, spans in extents.items():
        region = None
        for start, end, index in sorted(spans):
            # Tensors less than one alignment step apart share a region (the padding between the
            # tensors of a flat buffer); a larger gap is bytes nothing uses, which are not copied.
            if region is None or start - start % ALIGN > _round_up(region.hi):
                if region is not None:
                    offset += _round_up(region.hi - region.lo)
                # Starting the region on an ALIGN boundary of the source keeps each tensor's alignment.
                region = _Region(storages[key], start - start % ALIGN, end, offset)
                regions.append(region)
            region.hi = max(region.hi, end)
            placed[index] = (region, start)
        offset += _round_up(region.hi - region.lo)
    views = []
    for index, (tensor, owner, attr) in enumerate(held):
        if index in placed:
            region, start = placed[index]
            views.append((tensor, owner, attr, region.offset + start - region.lo))
        else:
            views.append((tensor, owner, attr, -1))  # empty: no bytes to place
    return _FlatPlan(regions, views, offset)


class _HostBuffer:
    """A component's host copy, kept from its first eviction on and reused by every later one.

    Pinning registers exact-size host memory with CUDA (cudaHostRegister, as torch's own checkpoint
    staging does): torch's pinned allocator rounds each block up to a power of two, which would lock
    16 GiB for a 9 GB T5 encoder."""

    def __init__(self, nbytes: int, pin: bool):
        self.tensor = torch.empty(nbytes, dtype=torch.uint8)
        self.pinned = False
        if pin and nbytes:
            status = int(torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), nbytes, 1))
            self.pinned = status == 0
            if not self.pinned:
                _clear_cuda_error()
                log.warning("could not pin %.1f MB of host memory (CUDA error %d)", nbytes / 1e6, status)

    @property
    def nbytes(self) -> int:
        return self.tensor.numel()

    def __del__(self):
        # Before the memory goes back to the host allocator; views that outlive the buffer object
        # keep their (now unpinned) memory valid.
        if getattr(self, "pinned", False):
            try:
                torch.cuda.cudart().cudaHostUnregister(self.tensor.data_ptr())
            except Exception:  # interpreter shutdown
                pass


def _clear_cuda_error() -> None:
    """A failed cudaHostRegister stays as the CUDA runtime's last error, which PyTorch's next kernel
    launch check would raise as its own; read it back through the libcudart torch loaded."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if os.path.basename(line.split()[-1]).startswith("libcudart.so")}
        for path in paths:
            ctypes.CDLL(path).cudaGetLastError()
    except Exception:
        log.debug("could not clear the CUDA error state", exc_info=True)


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
    host_buffer: _HostBuffer | None = None  # where it goes when evicted (flat buffers)
    host_bytes: int = 0  # how much of host_buffer the last eviction filled

    def modules(self) -> list[torch.nn.Module]:
        return [self.primary, *self.aliases]


class ResidencyManager:
    def __init__(
        self,
        device: str | torch.device,
        budget_bytes: int,
        pin_host_memory: bool | None = None,
        flat_buffers: bool | None = None,
    ):
        self.device = torch.device(device)
        self.host = torch.device("cpu")
        self.budget_bytes = int(budget_bytes)
        # Pinned host memory only pays off (and only works) with a CUDA device to copy to.
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.pin_host_memory = pin if pin_host_memory is None else pin_host_memory
        # Where device and host are the same memory a move is only bookkeeping; tests turn it on
        # there to exercise the copies.
        self.flat_buffers = self.device.type != "cpu" if flat_buffers is None else flat_buffers
        self.last_move: dict | None = None  # what the last move did (the GPU bench reads it)
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
        if self.device.type == "cpu" or device is None:
            return False
        want = self.device
        if want.type == "cuda" and want.index is None:  # "cuda" is the current card; tensors say cuda:N
            want = torch.device("cuda", torch.cuda.current_device())
        return device == want

    def _move(self, component: Component, location: str) -> None:
        started = time.perf_counter()
        early = self._early_swap_in(component) if location == DEVICE else None
        plan = self._flat_plan_for(component, location)
        if plan is not None:
            record = self._move_flat(component, location, plan, early)
        else:
            record = self._move_per_tensor(component, location)
        component.location = location
        record.update(key=component.key, to=location, s=time.perf_counter() - started)
        self.last_move = record

    def _flat_plan_for(self, component: Component, location: str) -> _FlatPlan | None:
        if not self.flat_buffers:
            return None
        # A swap-in goes flat only from the component's own host buffer. The first placement after a
        # load keeps one allocation per tensor: the fast path may still replace tensors (FP8
        # conversion), and in one flat buffer the replaced bf16 bytes could not be freed.
        if location == DEVICE and component.host_buffer is None:
            return None
        plan = _flat_plan(component.modules())
        if plan is None:
            log.info("%s holds tensors a flat buffer cannot take; moving tensor by tensor", self._describe(component))
        return plan

    def _early_swap_in(self, component: Component) -> torch.Tensor | None:
        """Start copying the host buffer's used bytes to a new device buffer before the plan is worked
        out: the plan (about a millisecond of Python per few hundred tensors, as long as a VAE's whole
        copy) is then done while the bytes travel. Usually it is that same single run of bytes."""
        if not (self.flat_buffers and component.host_buffer is not None and component.host_bytes):
            return None
        try:
            early = torch.empty(component.host_bytes, dtype=torch.uint8, device=self.device)
        except torch.OutOfMemoryError:
            return None
        early.copy_(component.host_buffer.tensor[: component.host_bytes], non_blocking=self.device.type == "cuda")
        return early

    def _move_flat(
        self, component: Component, location: str, plan: _FlatPlan, early: torch.Tensor | None = None
    ) -> dict:
        target = self._target(location)
        new_buffer = False
        held = component.host_buffer
        copies = len(plan.regions)
        if early is not None and not (
            len(plan.regions) == 1
            and held is not None
            and plan.regions[0].storage.data_ptr() == held.tensor.data_ptr()
            and plan.regions[0].lo == 0
            and plan.nbytes == early.numel()
        ):
            early = None  # the tensors moved since the last eviction: copy what the plan says
        if location == HOST:
            # A new buffer when it is too small, or when some tensor still reads from it (one a
            # per-tensor swap-in left behind): copying it onto itself could overlap.
            if (
                held is None
                or held.nbytes < plan.nbytes
                or any(r.storage.data_ptr() == held.tensor.data_ptr() for r in plan.regions)
            ):
                component.host_buffer = None  # the old one goes before the new one is allocated
                component.host_buffer = _HostBuffer(plan.nbytes, self.pin_host_memory and torch.cuda.is_available())
                new_buffer = True
            flat = component.host_buffer.tensor
            component.host_bytes = plan.nbytes
        elif early is not None:
            flat = early
            plan.regions.clear()  # already on its way
        else:
            try:
                flat = torch.empty(plan.nbytes, dtype=torch.uint8, device=target)
            except torch.OutOfMemoryError:
                # No contiguous free block that large (fragmentation under a memory cap): the
                # per-tensor way needs none, and the next eviction makes the component flat again.
                log.warning("no %.1f MB block for %s; moving it tensor by tensor", plan.nbytes / 1e6, component.key)
                return self._move_per_tensor(component, location)
        cuda = "cuda" in (self.device.type, target.type)
        for region in plan.regions:
            source = torch.empty(0, dtype=torch.uint8, device=region.storage.device)
            source.set_(region.storage, region.lo, (region.hi - region.lo,), (1,))
            # Asynchronous both ways; device-to-host copies are waited for once below.
            flat[region.offset : region.offset + region.hi - region.lo].copy_(source, non_blocking=cuda)
            del source
        as_dtype: dict[torch.dtype, torch.Tensor] = {}
        for tensor, owner, attr, offset in plan.views:
            if offset < 0:
                view = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=target)
            else:
                base = as_dtype.get(tensor.dtype)
                if base is None:
                    base = as_dtype[tensor.dtype] = flat.view(tensor.dtype)
                view = base.as_strided(tensor.shape, tensor.stride(), offset // tensor.element_size())
            if owner is None:
                tensor.data = view  # the same Parameter/buffer object, now over the flat buffer
            else:
                setattr(owner, attr, view)
        plan.regions.clear()  # the source storages go as soon as nothing else holds them
        if cuda and location == HOST:
            torch.cuda.synchronize(self.device)
        component.nbytes = plan.nbytes
        return {
            "path": "flat",
            "bytes": plan.nbytes,
            "copies": copies,
            "early": flat is early,  # the copy began before the plan was made
            "new_host_buffer": new_buffer,
            "pinned": bool(component.host_buffer and component.host_buffer.pinned),
        }

    def _move_per_tensor(self, component: Component, location: str) -> dict:
        target = self._target(location)
        component.primary.to(target)
        if location == HOST and self.pin_host_memory:
            self._pin(component.primary)
        for alias in component.aliases:
            self._tie(alias, component.primary, target)
        if location == DEVICE:  # from a flat host buffer, the padding is gone
            component.nbytes = storage_bytes(component.modules())
        return {"path": "per-tensor", "bytes": component.nbytes, "new_host_buffer": False, "pinned": False}

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
