#!/usr/bin/env bash
# The GPU tier on a GPU host that has CUDA, PyTorch and transformers but no Node, no Redis, no
# diffusers and no network (the workplace's lent H200s; any such host). One script, two ends:
#
#   here (network, Node, the checkout built):
#     bash scripts/gpu-host.sh pack DIR         # DIR/: node.xz, redis.tar.xz, site.tar.xz, app.tar.xz, this script
#   there (DIR carried over):
#     bash DIR/gpu-host.sh install DIR          # unpack into $FLEXY_HOME (default /var/tmp/flexy)
#     bash DIR/gpu-host.sh snapshots            # npm run models -- random all: ~59 GiB of random snapshots
#     bash DIR/gpu-host.sh tier                 # npm run test:gpu; rows also in $OUT/gpu-e2e.jsonl
#     bash DIR/gpu-host.sh all DIR              # the three in order
#
# What pack puts in (about 45 MB, so it travels in one 64 MiB call):
#   node.xz       this machine's own node binary, xz-compressed (glibc x86-64; runs on the device)
#   redis.tar.xz  Debian's redis-server with liblzf.so.1 and libjemalloc.so.2 beside it
#   site.tar.xz   Python packages the device lacks, at uv.lock's versions, from PyPI wheels (pip download
#                 --no-deps, CPython 3.12, manylinux x86-64): diffusers, pydantic-settings and its
#                 needs, and bitsandbytes cut to its CUDA 13.0 and CPU libraries (the wheel carries
#                 every CUDA version: 43 MB)
#   app.tar.xz    the compiled service (dist/), the Node files it loads — traced while the GPU tier's
#                 reduced run serves on this machine, so sharp and better-sqlite3 come as built here for
#                 linux-x64 glibc — the engine catalog, migrations, the Python worker and the snapshot writer
# The device's own torch (2.11+cu130), transformers (5.x), accelerate, safetensors and tokenizers are used.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FLEXY_HOME="${FLEXY_HOME:-/var/tmp/flexy}"
# What the worker needs that the device image lacks, at the versions of worker-python/uv.lock.
WHEEL_NAMES=(diffusers bitsandbytes pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection)
PIP_PLATFORM=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

log() { echo "[gpu-host] $*"; }

pack() {
  local out="${1:?pack DIR}"
  local root
  root="$(cd "$HERE/.." && pwd)"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  local stage
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' RETURN

  log "building the service"
  (cd "$root" && node scripts/build.mjs >/dev/null)

  # The pieces that do not depend on the checkout are kept from an earlier pack into the same DIR.
  if [[ ! -s "$out/node.xz" || "$(readlink -f "$(command -v node)")" -nt "$out/node.xz" ]]; then
    log "node: $(command -v node) $(node --version)"
    xz -T0 -9 -c "$(readlink -f "$(command -v node)")" >"$out/node.xz"
  fi

  log "redis-server and the two libraries Debian's build needs beyond a CUDA image's"
  mkdir -p "$stage/redis/bin" "$stage/redis/lib"
  cp "$(readlink -f "$(command -v redis-server)")" "$stage/redis/bin/redis-server.real"
  for lib in liblzf.so.1 libjemalloc.so.2; do
    cp "$(ldd "$stage/redis/bin/redis-server.real" | awk -v l="$lib" '$1 == l { print $3 }')" "$stage/redis/lib/$lib"
  done
  cat >"$stage/redis/bin/redis-server" <<'SH'
#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/redis-server.real" "$@"
SH
  chmod +x "$stage/redis/bin/redis-server"
  tar -C "$stage/redis" -cJf "$out/redis.tar.xz" .

  local wheels
  wheels="$(python3 - "$root/worker-python/uv.lock" "${WHEEL_NAMES[@]}" <<'PY'
import sys, tomllib
locked = {p["name"]: p["version"] for p in tomllib.load(open(sys.argv[1], "rb"))["package"]}
print(" ".join(f"{name}=={locked[name]}" for name in sys.argv[2:]))
PY
)"
  log "Python packages: $wheels"
  mkdir -p "$stage/wheels" "$stage/site"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PIP_PLATFORM[@]}" -d "$stage/wheels" $wheels
  for wheel in "$stage"/wheels/*.whl; do
    # A wheel is a zip of what site-packages gets (no scripts in these two): unpack it, leaving out
    # bitsandbytes' libraries for other CUDA versions and ROCm/XPU.
    python3 - "$wheel" "$stage/site" <<'PY'
import re, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    keep = [n for n in z.namelist() if not re.search(r"libbitsandbytes_(?!cuda130|cpu)\w+\.so$", n)]
    z.extractall(target, keep)
PY
  done
  tar -C "$stage/site" -cJf "$out/site.tar.xz" .

  log "tracing the Node files the stack loads (the GPU tier, reduced, on this machine)"
  local trace="$stage/trace/files"
  mkdir -p "$stage/trace"
  (cd "$root" && FLEXY_TRACE_FILE="$trace" NODE_OPTIONS="--require $root/scripts/gpu-host/trace-files.cjs" \
    GPU_TIER_COMMAND="bash scripts/gpu-host.sh pack (trace run)" node dist/test/gpu/tier.js --reduced >"$stage/trace/run.log" 2>&1 &&
    FLEXY_TRACE_FILE="$trace" NODE_OPTIONS="--require $root/scripts/gpu-host/trace-files.cjs" \
    node dist/libs/hub/src/cli.js list >>"$stage/trace/run.log" 2>&1) ||
    { tail -40 "$stage/trace/run.log"; log "the reduced tier failed while tracing"; return 1; }
  (
    cd "$root"
    # Node reads package.json files (main, exports, type) without fs: every one above a traced file.
    cat "$stage"/trace/files.* | sort -u | node -e '
      const { existsSync, statSync } = require("node:fs");
      const { dirname, join, relative } = require("node:path");
      const root = process.argv[1];
      const out = new Set();
      for (const f of require("node:fs").readFileSync(0, "utf8").split("\n")) {
        if (!f.startsWith(root + "/") || !existsSync(f) || !statSync(f).isFile()) continue;
        const rel = relative(root, f);
        if (/^(\.data|test-artifacts|worker-python|bench\/results)\//.test(rel)) continue;
        out.add(rel);
        for (let d = dirname(f); d.startsWith(root + "/"); d = dirname(d)) {
          if (existsSync(join(d, "package.json"))) out.add(relative(root, join(d, "package.json")));
        }
      }
      process.stdout.write([...out].join("\n") + "\n");
    ' "$root"
    # Loaded by the dynamic linker (sharp's libvips), not by Node: the whole package. And what the
    # migrations' worker thread loads (prisma/tools/engine-thread.cjs: the schema engine's wasm).
    find node_modules/@img prisma node_modules/@prisma/schema-engine-wasm node_modules/@prisma/driver-adapter-utils \
      node_modules/@prisma/adapter-better-sqlite3 node_modules/better-sqlite3/lib -type f
    echo node_modules/better-sqlite3/package.json
    echo node_modules/better-sqlite3/build/Release/better_sqlite3.node
    find worker-python/flexy_worker -name '*.py'
    echo bench/gpu/snapshots.py
    echo bench/gpu/models.py
    find bench/gpu/configs -type f
    echo libs/engines/engine-catalog.json
    echo libs/config/worker-settings.json
    echo package.json
    echo scripts/gpu-host.sh
  ) | sort -u >"$stage/app-files"
  local sha
  sha="$(cd "$root" && git rev-parse --short HEAD)"
  [[ -z "$(cd "$root" && git status --porcelain --untracked-files=no)" ]] || sha="$sha-dirty"
  echo "$sha" >"$stage/.gpu-tier-commit"
  tar -C "$root" -cf "$stage/app.tar" -T "$stage/app-files"
  tar -C "$stage" -rf "$stage/app.tar" .gpu-tier-commit
  xz -T0 -9 -c "$stage/app.tar" >"$out/app.tar.xz"
  cp "$root/scripts/gpu-host.sh" "$out/gpu-host.sh"
  log "packed commit $sha into $out: $(du -sh "$out" | cut -f1) ($(wc -l <"$stage/app-files") service files)"
  ls -la "$out"
}

env_for_run() {
  export PATH="$FLEXY_HOME/bin:$FLEXY_HOME/redis/bin:$PATH"
  export PYTHONPATH="$FLEXY_HOME/site${PYTHONPATH:+:$PYTHONPATH}"
  export WORKER_PYTHON="${WORKER_PYTHON:-$(command -v python3)}"
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  # Snapshots go to the filesystem that had the most room when first asked (remembered, since writing
  # them changes the answer), unless MODELS_DIR says otherwise.
  if [[ -z "${MODELS_DIR:-}" ]]; then
    if [[ ! -s "$FLEXY_HOME/models-dir" ]]; then
      local best
      best="$(df --output=avail,target /var/tmp /root /tmp "$PWD" 2>/dev/null | tail -n +2 | sort -n | tail -1 | awk '{print $2}')"
      echo "${best%/}/flexy-models" >"$FLEXY_HOME/models-dir"
    fi
    MODELS_DIR="$(cat "$FLEXY_HOME/models-dir")"
    export MODELS_DIR
  fi
  mkdir -p "$MODELS_DIR"
  cd "$FLEXY_HOME/app"
}

install() {
  local from="${1:-$HERE}"
  mkdir -p "$FLEXY_HOME/bin" "$FLEXY_HOME/redis" "$FLEXY_HOME/site" "$FLEXY_HOME/app"
  xz -dc "$from/node.xz" >"$FLEXY_HOME/bin/node" && chmod +x "$FLEXY_HOME/bin/node"
  tar -C "$FLEXY_HOME/redis" -xJf "$from/redis.tar.xz"
  tar -C "$FLEXY_HOME/site" -xJf "$from/site.tar.xz"
  tar -C "$FLEXY_HOME/app" -xJf "$from/app.tar.xz"
  (
    env_for_run
    log "node $(node --version); $(redis-server --version | cut -d' ' -f1-3); app $(cat .gpu-tier-commit); MODELS_DIR $MODELS_DIR"
    "$WORKER_PYTHON" -c "import torch, transformers, diffusers, bitsandbytes, pydantic_settings; print('[gpu-host] python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'bitsandbytes', bitsandbytes.__version__)" ||
      log "WARNING: $WORKER_PYTHON lacks one of torch, transformers, diffusers, bitsandbytes (above)"
  )
}

snapshots() {
  env_for_run
  df -h "$MODELS_DIR" | tail -1
  node dist/libs/hub/src/cli.js random "${@:-all}" --models-dir "$MODELS_DIR"
  df -h "$MODELS_DIR" | tail -1
}

tier() {
  env_for_run
  GPU_TIER_COMMAND="${GPU_TIER_COMMAND:-bash scripts/gpu-host.sh tier}" node dist/test/gpu/tier.js "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  pack) pack "$@" ;;
  install) install "$@" ;;
  snapshots) snapshots "$@" ;;
  tier) tier "$@" ;;
  all) install "${1:-$HERE}" && snapshots && tier ;;
  *) sed -n '2,28p' "$0"; exit 2 ;;
esac
