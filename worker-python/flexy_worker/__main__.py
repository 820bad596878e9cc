"""``python -m flexy_worker``: the worker process (see ``worker.py`` for the protocol and options).

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
    proto_out = _isolate_stdout()
    # Weights come only from MODELS_DIR: never reach the hub at run time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("FLEXY_WORKER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    # Unbuffered raw stdin: no buffer lock for the reader thread to hold at exit.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)

    from .worker import main

    try:
        return main(sys.argv[1:], proto_out, proto_in)
    except SystemExit as exc:  # argparse errors and a missing CUDA device
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
