#!/usr/bin/env bash
# GPU benchmarks of the worker on the real architectures (random weights). One command:
#
#   bash bench/gpu/run_all.sh                 # every suite, about 30 minutes on one H100/H200
#   bash bench/gpu/run_all.sh flux2-step      # one suite: flux2-step | flux2-fast | flux2-libs | pipe-flux2 | pipe-others | residency
#   bash bench/gpu/run_all.sh flux2-libs pipe-flux2 -- --flux2-fast fast,best   # suites, then bench.py options
#
# Needs one CUDA GPU with >= 80 GB (an H100 80GB or H200; FLUX.2 in bf16 is 64 GB of weights), and
# Python with torch 2.11, diffusers 0.42.1, transformers 5.x, accelerate and bitsandbytes 0.50 (torchao
# and nvidia-cudnn-frontend for flux2-libs): the worker's own environment (worker-python/.venv, from
# `uv sync`) when it exists; otherwise $PYTHON (default python3). Wheels in ./.whl are installed into
# /tmp/site first, for machines without network. Rows are appended to bench/results/gpu.jsonl; each
# records this script's invocation as `command` (and bench.py's own arguments as `argv`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_COMMAND="bash bench/gpu/run_all.sh${*:+ $*}"
suites=()
while [[ $# -gt 0 && "$1" != "--" ]]; do suites+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#suites[@]} -eq 0 ]] && suites=(all)
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ -z "${PYTHON:-}" ]]; then
  # The worker's own environment when it exists (`uv sync --project worker-python`); never an
  # implicit `uv run`, which would try to download the environment on a machine without network.
  if [[ -x worker-python/.venv/bin/python ]]; then
    PYTHON=worker-python/.venv/bin/python
  else
    PYTHON=python3
  fi
fi
export PYTHONUNBUFFERED=1
status=0
for suite in "${suites[@]}"; do
  $PYTHON bench/gpu/bench.py --suite "$suite" "$@" || status=1
done
exit $status
