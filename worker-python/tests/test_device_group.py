"""A device group on the CPU (``FLEXY_WORKER_WORLD_SIZE=2``, what ``WORKER_DEVICES=cpu+cpu`` starts):
the real worker process as rank 0, the follower it starts itself, gloo between them, diffusers'
context parallelism on FLUX.2's transformer, driven over the wire protocol like any worker.

Every worker this module needs is spawned when the module starts (imports dominate), each test using
its own: the killing tests end theirs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from flexy_worker import protocol as wire
from test_worker_process import JOB_TIMEOUT_S, WorkerProc, generate

FLUX2 = "flux2_dev_4bit"
GROUP = {"FLEXY_WORKER_WORLD_SIZE": "2", "WORKER_PRELOAD": FLUX2}
# Long enough that a cancel or a kill sent at the first step lands mid-job.
LONG_STEPS = 40


@pytest.fixture(scope="module")
def workers(demo_models_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("group-logs")
    specs = {
        "single": {"WORKER_PRELOAD": FLUX2},
        "group": GROUP,
        "kill_follower": GROUP,
        "kill_leader": {"FLEXY_WORKER_WORLD_SIZE": "2"},  # nothing to load: only its processes matter
    }
    started = {name: WorkerProc(name, demo_models_dir, log_dir, env=env) for name, env in specs.items()}
    yield started
    for worker in started.values():
        for pid in _followers(worker):
            _kill(pid)
        worker.kill()


def _followers(worker: WorkerProc) -> list[int]:
    """The processes rank 0 started (its children), read from /proc."""
    pid = worker.proc.pid
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _ready(worker: WorkerProc) -> list[int]:
    """Waits for rank 0's ready; returns its follower's pid."""
    worker.wait_ready()
    return _wait_until(lambda: _followers(worker), 10, f"worker {worker.name} shows its follower")


def _psnr(a: bytes, b: bytes) -> float:
    x, y = (np.frombuffer(v, dtype=np.uint8).astype(np.float64) for v in (a, b))
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("engine,guidance", [(FLUX2, 4.0), ("sd3_medium", 7.0)])
def test_two_ranks_make_the_image_one_process_makes(workers, engine, guidance):
    # FLUX.2 runs context-parallel (its tokens split across the ranks); SD3 has no plan and runs whole
    # on each rank. Either way the image is the single process's: the same seed, the same arithmetic
    # up to the order of floating-point sums.
    single, group = workers["single"], workers["group"]
    single.wait_ready()
    assert len(_ready(group)) == 1
    images = {}
    for name, worker in (("single", single), ("group", group)):
        frames, result = worker.run_job(f"same-{engine}-{name}", engine=engine, steps=2, guidance=guidance, seed=42)
        assert result.status == "succeeded", result.error
        assert [f.header["step"] for f in frames if f.type == "progress"] == [1, 2]  # rank 0 reports, once per step
        images[name] = [f.payload for f in frames if f.type == "image"]
    assert len(images["group"]) == 1 and len(images["group"][0]) == 64 * 64 * 3
    psnr = _psnr(images["single"][0], images["group"][0])
    assert psnr >= 40, f"{engine}: PSNR {psnr:.1f} dB between the group's image and the single process's"


def test_a_cancel_reaches_every_rank_at_the_same_step(workers):
    group = workers["group"]
    follower = _ready(group)
    group.send(generate("cancel-mid", engine=FLUX2, steps=LONG_STEPS, guidance=4.0))
    progress = wire.ProgressMessage.from_header(group.expect("progress").header)
    group.send({"type": "cancel", "job_id": "cancel-mid"})
    result = wire.ResultMessage.from_header(group.expect("result", skip=("pong", "progress")).header)
    assert result.status == "cancelled", result.error
    # The ranks agreed on the step they stopped after: rank 0 says which, for all of them.
    assert "all 2 ranks stopped after step" in result.error.message, result.error.message
    stopped_after = int(result.error.message.rsplit("step", 1)[1].strip(" )"))
    assert progress.step <= stopped_after < LONG_STEPS
    # Nobody was left inside a collective: the same two processes serve the next job.
    frames, after = group.run_job("after-cancel", engine=FLUX2, steps=2, guidance=4.0)
    assert after.status == "succeeded", after.error
    assert _followers(group) == follower and group.proc.poll() is None


def test_killing_the_follower_mid_job_ends_the_group_with_the_crash_code(workers):
    worker = workers["kill_follower"]
    (follower,) = _ready(worker)
    worker.send(generate("killed-follower", engine=FLUX2, steps=LONG_STEPS, guidance=4.0))
    worker.expect("progress")
    os.kill(follower, signal.SIGKILL)
    # No result: the supervisor sees rank 0 exit with RANK_LOST while it held the job, and retries it.
    assert worker.wait_exit(JOB_TIMEOUT_S) == wire.ExitCode.RANK_LOST, worker.log()
    assert not _alive(follower)


def test_killing_rank_0_leaves_no_follower_behind(workers):
    worker = workers["kill_leader"]
    (follower,) = _ready(worker)
    worker.proc.kill()
    worker.proc.wait(10)
    _wait_until(lambda: not _alive(follower), 20, f"follower {follower} exits after rank 0 was killed")
