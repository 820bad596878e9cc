# syntax=docker/dockerfile:1
# Gateway image: the NestJS HTTP API alone, on a distroless Node 20 base that runs as a non-root
# user and has no shell or package manager. It never touches a GPU; it reads MODELS_DIR (mounted
# read-only) only to report which engines have verified snapshots.
#
#   DOCKER_BUILDKIT=1 docker build -f docker/gateway.Dockerfile -t flexyface-gateway .

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs20-debian12:nonroot

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY . .
RUN npm run --if-present db:generate \
    && npm run build \
    && npm prune --omit=dev --no-audit --no-fund \
    && mkdir -p /out/data/images /out/models

FROM ${RUNTIME_IMAGE}
WORKDIR /app
COPY --from=build /app/package.json /app/package.json
COPY --from=build /app/node_modules /app/node_modules
COPY --from=build /app/dist /app/dist
COPY --from=build /app/libs /app/libs
COPY --from=build /app/prisma /app/prisma
# Distroless has no mkdir: the data folders come from the build stage, owned by the nonroot user (65532).
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build /out/models /models

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data \
    IMAGES_DIR=/data/images \
    MODELS_DIR=/models \
    HF_HUB_OFFLINE=1
USER 65532:65532
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/nodejs/bin/node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The base image's entrypoint is node itself.
CMD ["dist/apps/gateway/src/main.js"]
