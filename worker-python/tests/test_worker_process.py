"""The real worker process (`python -m flexy_worker`) on demo snapshots, driven over its stdin/stdout.

Starting a worker costs most of the time here (importing torch and diffusers), so every worker this
module needs is spawned at once when the module starts, and each test talks to its own.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flexy_worker import protocol as wire
from flexy_worker.settings import WorkerSettings

WORKER_ROOT = Path(__file__).resolve().parents[1]
ENGINE = "flux1_dev"
SIZE = 64
STEPS = 4
START_TIMEOUT_S = 240
JOB_TIMEOUT_S = 120
# The variables the worker's settings model reads.
SETTING_NAMES = frozenset(str(field.validation_alias) for field in WorkerSettings.model_fields.values())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


class WorkerProc:
    """One spawned worker plus a thread that turns its stdout into frames."""

    def __init__(self, name: str, models_dir: Path, log_dir: Path, *, env: dict[str, str] | None = None):
        self.name = name
        self.stderr_path = log_dir / f"worker-{name}.log"  # under pytest's temp dir, kept for the last runs
        # Settings arrive in the environment only, as the supervisor hands them over.
        full_env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        full_env.update(MODELS_DIR=str(models_dir), FLEXY_WORKER_DEVICE="cpu")
        full_env["OMP_NUM_THREADS"] = "1"  # six workers share two cores here; tiny models gain nothing from more
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flexy_worker"],
            cwd=WORKER_ROOT, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "wb"),
        )
        self.frames: queue.Queue[wire.Frame | None | Exception] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready: wire.ReadyMessage | None = None

    def _read(self) -> None:
        try:
            for frame in wire.FrameReader(self.proc.stdout):
                self.frames.put(frame)
            self.frames.put(None)
        except Exception as exc:  # surfaced to the test that reads next
            self.frames.put(exc)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def send(self, header: dict, payload: bytes = b"") -> None:
        self.proc.stdin.write(wire.encode_frame(header, payload))
        self.proc.stdin.flush()

    def next(self, timeout: float = JOB_TIMEOUT_S) -> wire.Frame | None:
        try:
            item = self.frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {self.name}: no frame within {timeout}s\n{self.log()}") from None
        if isinstance(item, Exception):
            raise AssertionError(f"worker {self.name} sent an invalid stream: {item}\n{self.log()}")
        return item

    def expect(self, type_: str, timeout: float = JOB_TIMEOUT_S, skip: tuple[str, ...] = ("pong",)) -> wire.Frame:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next(max(0.1, deadline - time.monotonic()))
            assert frame is not None, f"worker {self.name} closed stdout while waiting for {type_}\n{self.log()}"
            if frame.type == type_:
                return frame
            assert frame.type in skip, f"expected {type_}, got {frame.header}"

    def wait_ready(self) -> wire.ReadyMessage:
        if self.ready is None:
            frame = self.expect("ready", START_TIMEOUT_S)
            self.ready = wire.ReadyMessage.from_header(frame.header)
        return self.ready

    def run_job(self, job_id: str, **overrides) -> tuple[list[wire.Frame], wire.ResultMessage]:
        """Send a generate and collect every frame of that job up to its result."""
        self.send(generate(job_id, **overrides))
        frames = []
        while True:
            frame = self.expect_any(JOB_TIMEOUT_S)
            if frame.type == "pong":
                continue
            assert frame.header.get("job_id") == job_id, frame.header
            frames.append(frame)
            if frame.type == "result":
                return frames, wire.ResultMessage.from_header(frame.header)

    def expect_any(self, timeout: float) -> wire.Frame:
        frame = self.next(timeout)
        assert frame is not None, f"worker {self.name} closed stdout\n{self.log()}"
        return frame

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.name} did not exit within {timeout}s\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def generate(job_id: str, **overrides) -> dict:
    header = {
        "type": "generate", "job_id": job_id, "engine": ENGINE, "prompt": "a red fox in the snow",
        "negative_prompt": None, "seed": 1234, "steps": STEPS, "guidance": 3.5, "width": SIZE, "height": SIZE,
        "num_images": 1, "references": [], "preview_every": 0,
    }
    header.update(overrides)
    return header


@pytest.fixture(scope="module")
def fleet(demo_models_dir, tmp_path_factory):
    """Every worker this module uses, started together so their start-up overlaps."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    specs = {
        "main": dict(env={"WORKER_PRELOAD": ENGINE}),
        # No network: any hub or proxy access would fail or hang; the worker must not try.
        "faults": dict(env={
            "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy, "NO_PROXY": "",
            "HF_HUB_OFFLINE": "0", "FLEXY_FAULT_OOM_ON_JOB": "[oom]", "FLEXY_FAULT_CUDA_FATAL_ON_JOB": "[fatal]",
        }),
        "sigterm": {},
        "eof": {},
        "hang": dict(env={"FLEXY_FAULT_HANG_ON_JOB": "[hang]", "FLEXY_WORKER_EOF_GRACE_S": "2"}),
        "segv": dict(env={"FLEXY_FAULT_EXIT_ON_JOB": "[segv]:SIGSEGV"}),
        "preload_oom": dict(env={"FLEXY_FAULT_OOM_ON_PRELOAD": ENGINE, "WORKER_PRELOAD": ENGINE}),
        "standby": dict(env={"FLEXY_WORKER_STANDBY": "1", "WORKER_PRELOAD": ENGINE}),
    }
    log_dir = tmp_path_factory.mktemp("worker-logs")
    workers = {name: WorkerProc(name, demo_models_dir, log_dir, **spec) for name, spec in specs.items()}
    yield workers
    for worker in workers.values():
        worker.kill()


@pytest.fixture(scope="module")
def main_worker(fleet):
    worker = fleet["main"]
    worker.wait_ready()
    return worker


# ---- the main worker: protocol behaviour ---------------------------------------------------------


def test_ready_describes_the_worker(main_worker):
    ready = main_worker.ready
    assert ready.protocol == wire.PROTOCOL_VERSION
    assert ready.pid == main_worker.proc.pid
    assert ready.device == "cpu"
    assert ready.torch_version.startswith("2.") and ready.diffusers_version
    engines = {e.engine: e for e in ready.engines}
    assert engines[ENGINE].weights == "demo"
    assert ENGINE in [e.engine for e in ready.residency.engines]  # preloaded before ready


def test_pongs_report_each_engines_health(main_worker):
    main_worker.send({"type": "ping", "seq": 11})
    pong = wire.PongMessage.from_header(main_worker.expect("pong").header)
    assert {e.engine for e in pong.engines} == {e.engine for e in main_worker.ready.engines}
    assert all(e.state == "available" and e.reason is None and e.retry_at is None for e in pong.engines)


def test_generation_streams_progress_then_images_then_result(main_worker):
    frames, result = main_worker.run_job("gen-1", num_images=2)
    progress = [wire.ProgressMessage.from_header(f.header) for f in frames if f.type == "progress"]
    images = [f for f in frames if f.type == "image"]
    assert [p.step for p in progress] == list(range(1, STEPS + 1))
    assert all(p.total_steps == STEPS and p.preview is None for p in progress)
    assert [f.type for f in frames] == ["progress"] * STEPS + ["image", "image", "result"]
    assert [f.header["index"] for f in images] == [0, 1]
    for frame in images:
        assert frame.header["image"] == {"width": SIZE, "height": SIZE, "channels": 3, "byte_length": SIZE * SIZE * 3}
        assert len(frame.payload) == SIZE * SIZE * 3
    assert images[0].payload != images[1].payload  # two images of one job differ
    assert result.status == "succeeded" and result.error is None
    assert result.num_images == 2 and result.weights == "demo" and result.model_revision
    assert result.timings.total_ms > 0 and result.timings.denoise_ms > 0


def test_same_seed_gives_identical_bytes(main_worker):
    runs = []
    for job_id in ("seed-a", "seed-b"):
        frames, result = main_worker.run_job(job_id, seed=77)
        assert result.status == "succeeded"
        runs.append([f.payload for f in frames if f.type == "image"])
    assert runs[0] == runs[1]
    frames, _ = main_worker.run_job("seed-c", seed=78)
    assert [f.payload for f in frames if f.type == "image"] != runs[0]


def test_previews_come_with_progress_when_asked(main_worker):
    frames, result = main_worker.run_job("preview-1", preview_every=2)
    assert result.status == "succeeded"
    with_preview = [f for f in frames if f.type == "progress" and f.header["preview"] is not None]
    assert [f.header["step"] for f in with_preview] == [2, 4]
    for frame in with_preview:
        ref = frame.header["preview"]
        assert ref["channels"] == 3 and len(frame.payload) == ref["byte_length"] == ref["width"] * ref["height"] * 3


def test_reference_images_travel_in_the_payload(main_worker):
    # flux1_dev takes no references: the worker decodes them, the engine refuses them by name.
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    main_worker.send(generate("refs-1", references=[{"width": 2, "height": 2, "channels": 3, "byte_length": 12}]), pixels)
    result = wire.ResultMessage.from_header(main_worker.expect("result").header)
    assert result.job_id == "refs-1" and result.status == "failed"
    assert result.error.code == "bad_input" and result.error.field == "references"


@pytest.mark.parametrize(
    "job_id,override,field",
    [
        ("bad-width", {"width": 65}, "width"),
        ("bad-steps", {"steps": 0}, "steps"),
        ("bad-type", {"guidance": "high"}, "guidance"),
        ("bad-engine", {"engine": "no_such_engine"}, "engine"),
    ],
)
def test_bad_input_fails_naming_the_field(main_worker, job_id, override, field):
    main_worker.send(generate(job_id, **override))
    result = wire.ResultMessage.from_header(main_worker.expect("result").header)
    assert result.job_id == job_id and result.status == "failed"
    assert result.error.code == "bad_input" and result.error.field == field, result.error


def test_bad_reference_payload_fails_naming_the_reference(main_worker):
    main_worker.send(generate("bad-ref", references=[{"width": 2, "height": 2, "channels": 3, "byte_length": 12}]), b"\0" * 5)
    result = wire.ResultMessage.from_header(main_worker.expect("result").header)
    assert result.status == "failed" and result.error.code == "bad_input" and result.error.field == "references[0]"


def test_ping_is_answered_while_a_job_runs(main_worker):
    main_worker.send(generate("busy-1", steps=40, width=128, height=128))
    first = main_worker.expect("progress")
    assert first.header["job_id"] == "busy-1"
    main_worker.send({"type": "ping", "seq": 7})
    sent = time.monotonic()
    while True:
        frame = main_worker.expect_any(JOB_TIMEOUT_S)
        if frame.type == "pong":
            break
        assert frame.type == "progress", frame.header
    pong = wire.PongMessage.from_header(frame.header)
    assert pong.seq == 7 and pong.busy_job_id == "busy-1"
    assert pong.last_progress_at is not None and abs(pong.last_progress_at / 1000 - time.time()) < 60
    assert ENGINE in [e.engine for e in pong.residency.engines]
    assert time.monotonic() - sent < 5  # answered by the reader thread, not after the job
    main_worker.send({"type": "cancel", "job_id": "busy-1"})
    assert main_worker.expect("result", skip=("progress", "pong")).header["status"] == "cancelled"


def test_cancel_mid_run_stops_within_one_step(main_worker):
    steps = 50
    main_worker.send(generate("cancel-1", steps=steps, width=128, height=128))
    main_worker.expect("progress")
    main_worker.send({"type": "cancel", "job_id": "cancel-1"})
    later_steps = []
    while True:
        frame = main_worker.expect_any(JOB_TIMEOUT_S)
        if frame.type == "progress":
            later_steps.append(frame.header["step"])
            continue
        if frame.type == "pong":
            continue
        break
    result = wire.ResultMessage.from_header(frame.header)
    assert result.job_id == "cancel-1" and result.status == "cancelled" and result.error.code == "cancelled"
    # The cancel may cross one step in flight, and the step that notices it is reported: at most two.
    assert len(later_steps) <= 2 and (not later_steps or later_steps[-1] < steps)
    assert result.num_images == 0


def test_interrupt_stops_the_job_as_interrupted_not_cancelled(main_worker):
    main_worker.send(generate("taken-back", steps=50, width=128, height=128))
    main_worker.send(generate("taken-back-queued", steps=2))
    main_worker.expect("progress")
    main_worker.send({"type": "interrupt", "job_id": "taken-back-queued"})
    main_worker.send({"type": "interrupt", "job_id": "taken-back"})
    results = {}
    while len(results) < 2:
        frame = main_worker.expect("result", skip=("progress", "pong"))
        results[frame.header["job_id"]] = (frame.header["status"], frame.header["error"]["code"])
    assert results == {"taken-back": ("interrupted", "interrupted"), "taken-back-queued": ("interrupted", "interrupted")}


def test_cancel_of_a_queued_job_answers_it_at_once(main_worker):
    main_worker.send(generate("runner", steps=30, width=128, height=128))
    main_worker.send(generate("queued", steps=2))
    main_worker.expect("progress")
    main_worker.send({"type": "cancel", "job_id": "queued"})
    results = {}
    while len(results) < 2:
        frame = main_worker.expect_any(JOB_TIMEOUT_S)
        if frame.type == "result":
            results[frame.header["job_id"]] = frame.header["status"]
            if frame.header["job_id"] == "queued":
                main_worker.send({"type": "cancel", "job_id": "runner"})
    assert results == {"queued": "cancelled", "runner": "cancelled"}


def test_unload_then_generate_loads_again(main_worker):
    main_worker.send({"type": "unload", "engine": None})
    main_worker.send({"type": "ping", "seq": 99})
    deadline = time.monotonic() + 30
    while True:  # the unload runs on the GPU thread; poll until the residency shows it
        pong = wire.PongMessage.from_header(main_worker.expect("pong").header)
        if not pong.residency.engines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
        main_worker.send({"type": "ping", "seq": 100})
    assert pong.residency.engines == []
    _, result = main_worker.run_job("after-unload")
    assert result.status == "succeeded" and result.timings.load_ms > 0


def test_shutdown_finishes_the_running_job_and_interrupts_the_queued_ones(main_worker):
    main_worker.send(generate("last-1", steps=8, width=128, height=128))
    main_worker.send(generate("last-queued", steps=2))
    main_worker.expect("progress")
    main_worker.send({"type": "shutdown"})
    results = {}
    while len(results) < 2:
        frame = main_worker.expect("result", skip=("progress", "pong", "image"))
        results[frame.header["job_id"]] = frame.header["status"]
    assert results == {"last-1": "succeeded", "last-queued": "interrupted"}
    assert main_worker.wait_exit() == wire.ExitCode.OK
    assert main_worker.next(10) is None  # stdout closed after the last frame


# ---- faults and other ends -----------------------------------------------------------------------


def _pong(worker: WorkerProc) -> wire.PongMessage:
    worker.send({"type": "ping", "seq": 1})
    return wire.PongMessage.from_header(worker.expect("pong").header)


def test_a_standby_worker_waits_for_start_then_is_ready_at_once(fleet):
    worker = fleet["standby"]
    deadline = time.monotonic() + START_TIMEOUT_S
    while "standing by" not in worker.log():  # imports done: now it only waits
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.log()
        time.sleep(0.2)
    worker.send({"type": "ping", "seq": 3})
    pong = wire.PongMessage.from_header(worker.expect("pong", timeout=10).header)
    assert pong.seq == 3 and pong.busy_job_id is None  # alive and answering, not ready, nothing sent unasked
    started = time.monotonic()
    worker.send({"type": "start"})
    ready = worker.wait_ready()
    assert time.monotonic() - started < 30  # loading the preload set only: the imports were paid before
    engines = {e.engine: e for e in ready.engines}
    assert engines[ENGINE].state == "available" and engines[ENGINE].reason is None
    assert ENGINE in [e.engine for e in ready.residency.engines]
    _, result = worker.run_job("after-standby")
    assert result.status == "succeeded"


def test_offline_oom_recovery_and_fatal_cuda(fleet):
    worker = fleet["faults"]
    ready = worker.wait_ready()
    assert ENGINE in [e.engine for e in ready.engines]
    _, result = worker.run_job("offline-1")
    assert result.status == "succeeded"  # loaded and generated with every network path closed

    _, result = worker.run_job("other-engine", engine="realvis_xl")
    assert result.status == "succeeded"

    _, result = worker.run_job("oom-1", prompt="a fox [oom]")
    assert result.status == "failed" and result.error.code == "oom"
    assert {e.engine for e in _pong(worker).residency.engines} == {ENGINE, "realvis_xl"}
    # A second OOM in a row unloads every engine but the one the job needed.
    _, result = worker.run_job("oom-2", prompt="a fox [oom] again")
    assert result.status == "failed" and result.error.code == "oom"
    assert [e.engine for e in _pong(worker).residency.engines] == [ENGINE]
    _, result = worker.run_job("after-oom")
    assert result.status == "succeeded"

    frames, result = worker.run_job("fatal-1", prompt="a fox [fatal]")
    assert result.status == "failed" and result.error.code == "cuda_fatal"
    assert "illegal memory access" in result.error.message
    assert worker.wait_exit() == wire.ExitCode.CUDA_POISONED


def test_sigterm_interrupts_the_job_and_exits_zero(fleet):
    worker = fleet["sigterm"]
    worker.wait_ready()
    worker.send(generate("term-1", steps=50, width=128, height=128))
    worker.send(generate("term-queued", steps=2))
    worker.expect("progress")
    worker.proc.send_signal(signal.SIGTERM)
    results = {}
    while len(results) < 2:
        frame = worker.expect("result", skip=("progress", "pong"))
        results[frame.header["job_id"]] = wire.ResultMessage.from_header(frame.header)
    # Stopping is not cancelling: nobody asked for a cancel, so both go back to the supervisor as interrupted.
    running, queued = results["term-1"], results["term-queued"]
    assert running.status == "interrupted" and running.error.code == "interrupted" and "SIGTERM" in running.error.message
    assert queued.status == "interrupted" and queued.error.code == "interrupted"
    assert worker.wait_exit() == wire.ExitCode.OK


def test_closing_stdin_makes_a_ready_worker_exit(fleet):
    worker = fleet["eof"]
    worker.wait_ready()
    started = time.monotonic()
    worker.proc.stdin.close()
    assert worker.wait_exit(30) == wire.ExitCode.OK
    assert time.monotonic() - started < 5  # well inside the grace period: nothing was running
    assert "did not stop" not in worker.log()


def test_hung_step_still_answers_pings_and_stdin_closing_ends_it(fleet):
    worker = fleet["hang"]
    worker.wait_ready()
    worker.send(generate("hang-1", prompt="a fox [hang]"))
    time.sleep(1.5)
    worker.send({"type": "ping", "seq": 1})
    pong = wire.PongMessage.from_header(worker.expect("pong", skip=("progress",)).header)
    assert pong.busy_job_id == "hang-1"
    # The job stopped reporting: last_progress_at stays in the past while pongs keep coming.
    assert pong.last_progress_at is not None and pong.last_progress_at <= time.time() * 1000 - 1000
    # The supervisor is gone: the stuck GPU thread is not waited for past the grace period.
    started = time.monotonic()
    worker.proc.stdin.close()
    assert worker.wait_exit(30) == wire.ExitCode.OK
    assert time.monotonic() - started < 15
    assert "did not stop within 2 s" in worker.log()


def test_stdin_closed_during_start_up_exits_at_once(demo_models_dir, tmp_path):
    worker = WorkerProc("eof-start", demo_models_dir, tmp_path)
    try:
        worker.proc.stdin.close()
        assert worker.wait_exit(30) == wire.ExitCode.OK
    finally:
        worker.kill()


def test_pings_are_answered_during_start_up_and_garbage_exits_72(demo_models_dir, tmp_path):
    worker = WorkerProc("garbage", demo_models_dir, tmp_path)
    try:
        worker.send({"type": "ping", "seq": 5})
        pong = wire.PongMessage.from_header(worker.expect("pong", timeout=30).header)
        assert pong.seq == 5 and pong.busy_job_id is None
        worker.proc.stdin.write(b"\x00\x00\x00\x05\x00\x00\x00\x00{bad}")
        worker.proc.stdin.flush()
        assert worker.wait_exit(30) == wire.ExitCode.PROTOCOL_ERROR
        assert "protocol error" in worker.log()
    finally:
        worker.kill()


def test_unknown_message_type_exits_72(demo_models_dir, tmp_path):
    worker = WorkerProc("unknown-type", demo_models_dir, tmp_path)
    try:
        worker.send({"type": "launch", "job_id": "x"})
        assert worker.wait_exit(30) == wire.ExitCode.PROTOCOL_ERROR
    finally:
        worker.kill()


def test_exit_fault_kills_the_worker_with_the_signal(fleet):
    worker = fleet["segv"]
    worker.wait_ready()
    worker.send(generate("segv-1", prompt="a fox [segv]"))
    assert worker.wait_exit(JOB_TIMEOUT_S) == -signal.SIGSEGV
    frames = []
    while (frame := worker.next(10)) is not None:
        frames.append(frame)
    assert "result" not in [f.type for f in frames]


def test_oom_while_preloading_exits_71(fleet):
    worker = fleet["preload_oom"]
    assert worker.wait_exit(START_TIMEOUT_S) == wire.ExitCode.PRELOAD_OOM
    assert worker.next(10) is None  # no ready was sent
    assert "out of memory while preloading" in worker.log()


def test_nothing_but_frames_reaches_the_protocol_stdout():
    # Python prints and C-level writes to fd 1 after the switch must land on stderr.
    script = (
        "import os\n"
        "from flexy_worker.__main__ import _isolate_stdout\n"
        "proto = _isolate_stdout()\n"
        "print('python noise', flush=True)\n"
        "os.write(1, b'c noise\\n')\n"
        "proto.write(b'FRAME'); proto.flush()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=WORKER_ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"FRAME"
    assert b"python noise" in done.stderr and b"c noise" in done.stderr


# ---- configuration (no process needed) -----------------------------------------------------------


@pytest.fixture
def settings_env(monkeypatch):
    """Sets the worker's environment to exactly the given settings (none of the caller's)."""

    def set_env(**values: str) -> None:
        for name in SETTING_NAMES:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_settings_come_from_the_environment_with_the_generated_defaults(settings_env):
    from flexy_worker.settings import load_settings

    settings_env(MODELS_DIR="/m")
    defaults = load_settings()
    assert (str(defaults.models_dir), defaults.device, defaults.preload, defaults.text_encoder) == ("/m", "auto", (), "auto")
    assert (defaults.cpu_threads, defaults.eof_grace_s, defaults.log_level, defaults.vram_budget_gb) == (1, 30.0, "INFO", None)
    settings_env(MODELS_DIR="/m", FLEXY_ENGINE_CATALOG="/c.json", FLEXY_WORKER_DEVICE="cpu", WORKER_PRELOAD="flux1_dev, sd3_medium",
                 WORKER_VRAM_BUDGET_GB="7.5", FLUX2_TEXT_ENCODER="remote", FLEXY_CPU_THREADS="4", FLEXY_TEXT_ENCODER_URL="",
                 HF_TOKEN="hf_secret")  # fmt: skip
    given = load_settings()
    assert (str(given.engine_catalog), given.device, given.preload, given.vram_budget_gb, given.text_encoder, given.cpu_threads) == (
        "/c.json", "cpu", ("flux1_dev", "sd3_medium"), 7.5, "remote", 4)
    assert given.text_encoder_url is None  # blank is unset
    assert "hf_secret" not in repr(given)


@pytest.mark.parametrize("env,problem", [
    ({}, "MODELS_DIR"),
    ({"MODELS_DIR": "/m", "FLUX2_TEXT_ENCODER": "cloud"}, "FLUX2_TEXT_ENCODER: must be one of auto, local, remote (got 'cloud')"),
    ({"MODELS_DIR": "/m", "WORKER_VRAM_BUDGET_GB": "0"}, "WORKER_VRAM_BUDGET_GB: Input should be greater than 0 (got '0')"),
    ({"MODELS_DIR": "/m", "FLEXY_CPU_THREADS": "2.5"}, "FLEXY_CPU_THREADS"),
    ({"MODELS_DIR": "/m", "WORKER_PRELOAD": "flux1_dev,flux9"}, "WORKER_PRELOAD: must be one of"),
    ({"MODELS_DIR": "/m", "FLEXY_FAULT_EXIT_ON_JOB": "no-code"}, "FLEXY_FAULT_EXIT_ON_JOB"),
])  # fmt: skip
def test_bad_settings_are_refused_naming_the_variable(settings_env, env, problem):
    from flexy_worker.settings import SettingsError, load_settings

    settings_env(**env)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert any(problem in p for p in exc.value.problems), exc.value.problems


def test_bounds_are_the_generated_ones_not_a_copy():
    from flexy_worker.settings import SCHEMA_PATH, WorkerSettings

    schema = json.loads(SCHEMA_PATH.read_text())["schema"]["properties"]
    threads = WorkerSettings.model_fields["cpu_threads"]
    assert {type(m).__name__: getattr(m, "ge", getattr(m, "le", None)) for m in threads.metadata} == {
        "Ge": schema["FLEXY_CPU_THREADS"]["minimum"], "Le": schema["FLEXY_CPU_THREADS"]["maximum"]}
    assert set(SETTING_NAMES) == set(schema)  # the model reads every variable the schema gives the worker


def test_a_bad_setting_stops_the_process_with_its_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    done = subprocess.run([sys.executable, "-m", "flexy_worker"], cwd=WORKER_ROOT, capture_output=True, timeout=60,
                          env={**env, "MODELS_DIR": str(tmp_path), "FLEXY_WORKER_EOF_GRACE_S": "-1"})  # fmt: skip
    assert done.returncode == 2 and done.stdout == b""
    assert b"FLEXY_WORKER_EOF_GRACE_S: Input should be greater than 0 (got '-1')" in done.stderr
    assert b"Traceback" not in done.stderr
    with_args = subprocess.run([sys.executable, "-m", "flexy_worker", "--models-dir", str(tmp_path)], cwd=WORKER_ROOT,
                               capture_output=True, timeout=60, env={**env, "MODELS_DIR": str(tmp_path)})  # fmt: skip
    assert with_args.returncode == 2 and b"takes no arguments" in with_args.stderr


def test_fault_variables_are_parsed(settings_env):
    from flexy_worker.settings import load_settings
    from flexy_worker.worker import Faults

    settings_env(MODELS_DIR="/m", FLEXY_FAULT_EXIT_ON_JOB="a: b:137", FLEXY_FAULT_OOM_ON_JOB="[oom]")
    faults = Faults.from_settings(load_settings())
    assert (faults.exit_on, faults.exit_with, faults.oom, faults.hang) == ("a: b", "137", "[oom]", None)
    settings_env(MODELS_DIR="/m")
    assert faults.any() and not Faults.from_settings(load_settings()).any()
    Faults.from_settings(load_settings()).fire("anything [oom]")  # nothing armed: a no-op
    with pytest.raises(RuntimeError, match="illegal memory access"):
        Faults(cuda_fatal="[x]").fire("a [x] b")
    # The hang waits for the second step, so the first step's progress reaches the supervisor.
    Faults(hang="[h]").fire("a [h] b", step=1)
