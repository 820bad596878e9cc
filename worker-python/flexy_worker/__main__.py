"""``python -m flexy_worker``: the worker process (see ``worker.py`` for the protocol). It takes no
arguments: its settings are environment variables (``settings.py``), e.g.
``MODELS_DIR=.data/models FLEXY_WORKER_DEVICE=cpu python -m flexy_worker``.

stdout is the protocol channel and nothing else may write to it. Before anything heavy is imported,
the protocol keeps a private duplicate of fd 1, fd 1 itself is pointed at stderr (so prints from
Python, C extensions and CUDA libraries all land in the log), and the hub is switched offline.
"""

from __future__ import annotations

import logging
import os
import sys


def _isolate_stdout():
    sys.stdout.flush()
    proto_fd = os.dup(1)  # non-inheritable: child processes cannot write frames
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "wb", buffering=1 << 16)


def _run() -> int:
    from .settings import SettingsError, load_settings

    if sys.argv[1:]:
        print("python -m flexy_worker takes no arguments: its settings are environment variables "
              "(see flexy_worker/settings.py and the README's configuration table)", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print("flexy_worker: invalid configuration\n" + "".join(f"  {p}\n" for p in exc.problems), end="", file=sys.stderr)
        return 2
    # A device group's other ranks (started by rank 0, see group.py) speak no protocol: their stdout
    # and stderr are rank 0's stderr, their stdin the pipe from rank 0.
    follower = settings.rank > 0
    proto_out = None if follower else _isolate_stdout()
    # Weights come only from MODELS_DIR: never reach the hub at run time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[%(process)d{f' rank {settings.rank}' if follower else ''}]: %(message)s",
    )
    if follower:
        from .group import follower_main

        try:
            return follower_main(settings)
        except Exception:
            logging.getLogger("flexy_worker").exception("rank %d failed", settings.rank)
            return 1
    # Unbuffered raw stdin: no buffer lock for the reader thread to hold at exit.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)

    from .worker import main

    try:
        return main(settings, proto_out, proto_in)
    except SettingsError as exc:  # a setting only the GPU modules can check (FLEXY_FAST_PATH)
        logging.getLogger("flexy_worker").error("invalid configuration: %s", "; ".join(exc.problems))
        return 2
    except SystemExit as exc:  # a missing CUDA device
        if isinstance(exc.code, str):
            logging.getLogger("flexy_worker").error("%s", exc.code)
            return 2
        return int(exc.code or 0)
    except Exception:
        logging.getLogger("flexy_worker").exception("worker failed")
        return 1


if __name__ == "__main__":
    code = _run()
    try:
        sys.stderr.flush()
    finally:
        logging.shutdown()
        # Skip interpreter teardown: the reader thread may be blocked on stdin, and a CUDA context
        # that failed should not be torn down by destructors.
        os._exit(code)
