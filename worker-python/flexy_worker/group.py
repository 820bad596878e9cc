"""A worker over a group of devices (``WORKER_DEVICES=0+1``): one slot for the supervisor, several
processes here, one per device, that run each image together.

The supervisor starts one process, as for any worker, with ``FLEXY_WORKER_WORLD_SIZE=N`` and
``CUDA_VISIBLE_DEVICES`` listing the group's GPUs. That process is rank 0: it speaks the wire protocol,
and it starts ranks 1…N-1 itself (``python -m flexy_worker`` with ``FLEXY_WORKER_RANK``) before its own
slow imports, so that theirs overlap. Rank r runs on ``cuda:r`` (or the CPU, where ``cpu+cpu`` makes a
group for tests). Once rank 0 is ready to touch its device, it writes ``go <port>`` to each follower's
stdin, where a TCPStore on a free loopback port waits, and every rank joins one torch.distributed
process group: ``cpu:gloo,cuda:nccl`` on GPUs (NCCL for the tensors, gloo for the small CPU
exchanges), ``cpu:gloo`` on the CPU. Then they share:

* a control channel (gloo): rank 0 broadcasts each command (load, unload, generate) and, at the end of
  every denoising step, whether to go on: a cancel, an interrupt or an error decided on rank 0 reaches
  every rank at the same step, so no rank is left waiting in a collective;
* an agreement channel (gloo, ``AGREE_TIMEOUT``): after each command every rank says how it went.

What the ranks do with a command is ``engines/parallel.py``'s business; this module keeps the group
alive, or ends it as a whole:

* a follower dies with rank 0: ``PR_SET_PDEATHSIG`` (SIGKILL) and a thread that exits when its stdin,
  the pipe from rank 0, closes; no follower outlives rank 0, whatever killed it;
* rank 0 watches its followers: when one exits, or the ranks cannot agree in time (one is stuck in a
  collective the others left), rank 0 exits with ``ExitCode.RANK_LOST`` (73), taking the others with
  it, and the supervisor restarts the worker as after any crash, retrying the job it held.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .protocol import ExitCode
from .settings import WorkerSettings

log = logging.getLogger("flexy_worker.group")

WORKER_ROOT = Path(__file__).resolve().parents[1]
# Joining waits for every rank's imports (tens of seconds on a busy CPU).
JOIN_TIMEOUT = timedelta(minutes=10)
# An idle follower waits on the control channel for the next command, for as long as the worker lives.
CONTROL_TIMEOUT = timedelta(days=365)
# The ranks finish a command at about the same time (its last collective binds them); one that has not
# reported within this is stuck where the others are not: the group is out of step.
AGREE_TIMEOUT = timedelta(seconds=300)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Outcome:
    """How one rank's part of a command went: ``error`` is the WorkerError class name, or None."""

    rank: int
    error: str | None = None
    message: str | None = None
    field: str | None = None
    steps: int = 0  # denoising steps this rank completed (generate)

    @property
    def ok(self) -> bool:
        return self.error is None


class DeviceGroup:
    """This process's place in a device group: rank 0 (``spawn``) or a follower (``attach``)."""

    def __init__(self, rank: int, world_size: int):
        self.rank = rank
        self.world_size = world_size
        self.device: Any = None  # torch.device, once joined
        self.mesh: Any = None  # the (ring=1, ulysses=N) device mesh of context parallelism
        self._control: Any = None
        self._agreement: Any = None
        self._followers: list[subprocess.Popen] = []
        self._closing = False
        self._go = threading.Event()
        self._port: int | None = None

    # ---- starting -----------------------------------------------------------------------------

    @classmethod
    def spawn(cls, settings: WorkerSettings) -> DeviceGroup:
        """Rank 0: start ranks 1…N-1 now (they import while this process does) and watch them."""
        group = cls(0, settings.world_size)
        for rank in range(1, settings.world_size):
            env = {**os.environ, "FLEXY_WORKER_RANK": str(rank)}
            # stdout and stderr: this process's stderr (its fd 1 already points there), so their log
            # lines join the worker's. stdin: the pipe they live by.
            follower = subprocess.Popen([sys.executable, "-m", "flexy_worker"], cwd=WORKER_ROOT, env=env, stdin=subprocess.PIPE)
            group._followers.append(follower)
            threading.Thread(target=group._watch, args=(rank, follower), name=f"rank-{rank}-watch", daemon=True).start()
        log.info("device group of %d: started ranks %s", settings.world_size,
                 ", ".join(f"{r} (pid {p.pid})" for r, p in enumerate(group._followers, 1)))  # fmt: skip
        return group

    @classmethod
    def attach(cls, settings: WorkerSettings) -> DeviceGroup:
        """A follower: die with rank 0; its ``go`` comes on stdin."""
        group = cls(settings.rank, settings.world_size)
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is rank 0's to act on
        threading.Thread(target=group._read_parent, args=(sys.stdin.buffer,), name="parent-link", daemon=True).start()
        return group

    def wait_for_go(self) -> None:
        """A follower: wait until rank 0 is ready to touch its device (a spare rank 0 may wait long)."""
        while not self._go.wait(1.0):
            pass

    def join(self, device: str) -> None:
        """Every rank, with its device chosen (``cuda:<rank>`` or ``cpu``): form the process group."""
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        self.device = torch.device(device)
        if self.rank == 0:
            store = dist.TCPStore("127.0.0.1", 0, self.world_size, is_master=True, timeout=JOIN_TIMEOUT, wait_for_workers=False)
            for follower in self._followers:
                follower.stdin.write(f"go {store.port}\n".encode())
                follower.stdin.flush()
        else:
            self.wait_for_go()
            store = dist.TCPStore("127.0.0.1", self._port, self.world_size, is_master=False, timeout=JOIN_TIMEOUT)
        backend = "cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "cpu:gloo"
        dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world_size, timeout=JOIN_TIMEOUT)
        # Every rank creates these in the same order (new_group is collective).
        self._control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        self._agreement = dist.new_group(backend="gloo", timeout=AGREE_TIMEOUT)
        self.mesh = init_device_mesh(self.device.type, (1, self.world_size), mesh_dim_names=("ring", "ulysses"))
        log.info("rank %d of %d joined on %s (%s)", self.rank, self.world_size, self.device, backend)

    # ---- what the ranks exchange ----------------------------------------------------------------

    def send_command(self, command: Any) -> None:
        """Rank 0: the next command, to every follower."""
        import torch.distributed as dist

        dist.broadcast_object_list([command], src=0, group=self._control)

    def receive_command(self) -> Any:
        """A follower: waits for rank 0's next command."""
        import torch.distributed as dist

        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def share(self, value: Any = None) -> Any:
        """Rank 0's ``value`` on every rank (followers pass nothing)."""
        import torch.distributed as dist

        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def step(self, stop: bool = False) -> bool:
        """At the end of a denoising step: rank 0's decision (go on or stop), on every rank."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if stop and self.rank == 0 else 0], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=self._control)
        return bool(flag.item())

    def agree(self, outcome: Outcome) -> list[Outcome]:
        """Every rank's outcome of the command just run, in rank order. A rank that does not report
        within AGREE_TIMEOUT is stuck where the others are not: the group ends here."""
        import torch.distributed as dist

        outcomes: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(outcomes, outcome, group=self._agreement)
        except RuntimeError as exc:
            self.fail(f"the ranks did not agree within {AGREE_TIMEOUT.total_seconds():.0f} s ({exc})")
        return outcomes

    # ---- ending ---------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """The group cannot go on: this process exits now (rank 0 with RANK_LOST), and the others with it."""
        code = ExitCode.RANK_LOST if self.rank == 0 else 1
        log.error("rank %d: %s; exiting with %d", self.rank, reason, code)
        _exit(code)

    def close(self, grace_s: float = 10.0) -> None:
        """Rank 0, stopping in order: close the followers' pipes (they exit at once), then reap them."""
        self._closing = True
        for follower in self._followers:
            with contextlib.suppress(OSError):
                follower.stdin.close()
        for rank, follower in enumerate(self._followers, 1):
            try:
                follower.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("rank %d (pid %d) did not exit within %.0f s of its pipe closing; killing it", rank, follower.pid, grace_s)
                follower.kill()
                follower.wait()

    def _watch(self, rank: int, follower: subprocess.Popen) -> None:
        code = follower.wait()
        if self._closing:
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        self.fail(f"rank {rank} (pid {follower.pid}) {how}")

    def _read_parent(self, pipe: Any) -> None:
        """A follower's link to rank 0: its first line is ``go <port>``; its end is rank 0's end."""
        try:
            for line in pipe:
                word, _, value = line.decode().strip().partition(" ")
                if word == "go" and not self._go.is_set():
                    self._port = int(value)
                    self._go.set()
        except (OSError, ValueError) as exc:
            log.error("rank %d: unreadable link to rank 0: %s", self.rank, exc)
        log.info("rank %d: rank 0 is gone; exiting", self.rank)
        _exit(0)


def _die_with_parent() -> None:
    """The kernel sends SIGKILL when rank 0 dies, even while this process is stuck inside a collective
    and its Python threads cannot run. (Linux; elsewhere the stdin link alone does it.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("prctl unavailable (%s): this rank ends with its stdin link only", exc)


def _exit(code: int) -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(code)


def follower_main(settings: WorkerSettings) -> int:
    """``python -m flexy_worker`` with FLEXY_WORKER_RANK > 0: a follower, started by rank 0. It builds
    the engine manager rank 0 builds, from the same settings, and runs rank 0's commands until rank 0
    closes its pipe (it then exits at once) or the process fails (rank 0 then ends the group)."""
    group = DeviceGroup.attach(settings)
    # The slow imports now, while rank 0 does its own; the device only once rank 0 says go.
    import diffusers  # noqa: F401
    import torch  # noqa: F401

    from .engines import parallel  # noqa: F401
    from .worker import open_engine_manager

    group.wait_for_go()
    manager, _device, _budget = open_engine_manager(settings, group)
    manager.follow()
    return 0
