# syntax=docker/dockerfile:1
# Multi-stage build: dependencies compile in their own cached layer; the runtime image holds the binary,
# ONNX Runtime's library and the models (fetched and checksum-verified by scripts/setup.sh), nothing else.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency layer: manifests only, with stub sources, so code changes do not rebuild dependencies.
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/
COPY worker/Cargo.toml worker/
COPY crates/core/Cargo.toml crates/core/
COPY crates/store/Cargo.toml crates/store/
COPY crates/queue/Cargo.toml crates/queue/
COPY crates/vision/Cargo.toml crates/vision/
COPY crates/index/Cargo.toml crates/index/
COPY crates/telemetry/Cargo.toml crates/telemetry/
RUN for d in api worker crates/core crates/store crates/queue crates/vision crates/index crates/telemetry; do \
      mkdir -p $d/src && echo '' > $d/src/lib.rs; done \
 && mkdir -p src benches config migrations && echo 'fn main() {}' > src/main.rs \
 && for b in ingest query scaling; do echo 'fn main() {}' > benches/$b.rs; done \
 && touch config/default.toml \
 && cargo build --release --locked || true
COPY . .
RUN touch src/main.rs api/src/lib.rs worker/src/lib.rs crates/*/src/lib.rs \
 && cargo build --release --locked --bin lookalike

FROM python:3.11-slim-bookworm AS assets
WORKDIR /src
COPY scripts/setup.sh scripts/
COPY models/ models/
RUN LOOKALIKE_ASSETS=/assets scripts/setup.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /app lookalike
WORKDIR /app
COPY --from=build /src/target/release/lookalike /usr/local/bin/lookalike
COPY --from=assets /assets /app/.lookalike
RUN mkdir -p /app/.lookalike/data && chown -R lookalike /app/.lookalike/data
USER lookalike
ENV LOOKALIKE_HTTP__LISTEN=0.0.0.0:8080 \
    LOOKALIKE_LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["lookalike"]
# `serve` (API and worker in one process, embedded index) by default; `api` and `worker` run apart
# with a Qdrant server (docker-compose.yml). A worker listens on worker.listen (8081) instead.
CMD ["serve"]
