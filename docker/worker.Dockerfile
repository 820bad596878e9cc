# syntax=docker/dockerfile:1
# Worker + supervisor image for one GPU host: the NestJS supervisor (Node 20) and the pinned Python
# diffusers worker it spawns, on a CUDA runtime base. Weights are either baked in at build time by
# the models CLI (ENGINES build arg, HF_TOKEN as a BuildKit secret) or mounted at /models.
#
#   DOCKER_BUILDKIT=1 docker build -f docker/worker.Dockerfile \
#     --build-arg ENGINES="flux2_dev_4bit realvis_xl" --secret id=hf_token,env=HF_TOKEN -t flexyface-worker .

# CUDA 13.0 matches the CUDA wheels torch 2.11 pins in worker-python/uv.lock (driver >= 580 on the host).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# ---- Node build: dependencies, Prisma client, compiled apps and libs, engine-catalog.json ----
FROM ${NODE_IMAGE} AS node-build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY . .
RUN npm run --if-present db:generate && npm run build

# ---- Weights: the models CLI pulls each engine at the catalog's pinned revision and checks every file ----
FROM node-build AS weights
# Engines to bake in, space-separated ids, or "all"; empty bakes none (mount a models volume instead).
ARG ENGINES=""
ENV MODELS_DIR=/models
# The token is a secret mount: it exists only while this RUN runs and is never written to a layer.
# hadolint ignore=SC2086
RUN --mount=type=secret,id=hf_token,required=false \
    mkdir -p /models \
    && if [ -z "${ENGINES}" ]; then echo "no engines baked in; mount snapshots at /models"; \
       elif [ "${ENGINES}" = "all" ]; then HF_TOKEN_PATH=/run/secrets/hf_token npm run models -- pull --all; \
       else HF_TOKEN_PATH=/run/secrets/hf_token npm run models -- pull ${ENGINES}; fi \
    && npm run models -- list

# ---- Production Node dependencies only ----
FROM node-build AS node-prod
RUN npm prune --omit=dev --no-audit --no-fund

# ---- Runtime ----
FROM ${CUDA_IMAGE} AS runtime
# The distribution's Python 3.12 runs the uv-built virtual environment; libstdc++ is for Node.
# Versions come with the pinned base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 libstdc++6 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 flexy \
    && useradd --system --uid 65532 --gid flexy --home-dir /app --shell /usr/sbin/nologin flexy
COPY --from=node-build /usr/local/bin/node /usr/local/bin/node

WORKDIR /app
# The pinned Python environment, exactly as uv.lock says; uv itself is not left in the image.
ENV UV_PYTHON=/usr/bin/python3.12 UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
COPY worker-python/pyproject.toml worker-python/uv.lock worker-python/
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --project worker-python
COPY worker-python/ worker-python/
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --project worker-python

COPY --from=node-prod /app/package.json /app/package.json
COPY --from=node-prod /app/node_modules /app/node_modules
COPY --from=node-build /app/dist /app/dist
COPY --from=node-build /app/libs /app/libs
COPY --from=node-build /app/prisma /app/prisma
COPY docker/healthcheck-supervisor.js /app/docker/healthcheck-supervisor.js
# Baked weights are read-only to the worker (owned by root); images and other data are its own.
COPY --from=weights /models /models
RUN mkdir -p /data/images && chown -R flexy:flexy /data

# The run time never reaches the hub: weights are on disk before the worker starts.
ENV NODE_ENV=production \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DIFFUSERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MODELS_DIR=/models \
    DATA_DIR=/data \
    IMAGES_DIR=/data/images \
    WORKER_PYTHON=/app/worker-python/.venv/bin/python \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The same uid as the gateway image's nonroot user, so both can share the images volume.
USER 65532:65532
VOLUME ["/data/images"]
# Healthy while the supervisor has a live Python worker under it (it restarts dead ones).
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["node", "/app/docker/healthcheck-supervisor.js"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/apps/supervisor/src/main.js"]
