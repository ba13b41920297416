# syntax=docker/dockerfile:1
# Multi-stage build: dependencies compile in their own cached layer; the runtime image holds the binary,
# ONNX Runtime's library and both models (fetched and checksum-verified by scripts/setup.sh), config/,
# and runs as an unprivileged user. Builds on linux/amd64 and linux/arm64 (the platforms ONNX Runtime's
# wheel exists for); scripts/setup.sh stops the build with a clear message anywhere else.
#
#   docker build -t lookalike .
#   docker run --rm -p 8080:8080 -e LOOKALIKE_AUTH__ENABLED=false ... lookalike   # see README "Docker"
#
# tests/dockerfile.rs replays this file without a Docker engine: every COPY source, the assets stage's
# RUN lines for real, the final layout with its links, and the binary with this image's ENV and WORKDIR.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# meson, ninja and nasm: libdav1d-sys builds dav1d (the AV1 decoder behind AVIF) from its bundled source.
COPY scripts/build-tools.sh scripts/
RUN scripts/build-tools.sh
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
COPY crates/classifier/Cargo.toml crates/classifier/
COPY crates/catalogue/Cargo.toml crates/catalogue/
COPY crates/analysis/Cargo.toml crates/analysis/
COPY crates/api-types/Cargo.toml crates/api-types/
# Cargo refuses a manifest whose declared benchmarks have no source, so each gets a stub too.
RUN for d in api worker crates/core crates/store crates/queue crates/vision crates/index crates/telemetry crates/classifier crates/catalogue crates/analysis crates/api-types; do \
      mkdir -p $d/src && echo '' > $d/src/lib.rs; done \
 && mkdir -p src benches config migrations && echo 'fn main() {}' > src/main.rs \
 && for b in ingest.rs query/main.rs scaling.rs; do mkdir -p benches/$(dirname $b) && echo 'fn main() {}' > benches/$b; done \
 && touch config/default.toml
RUN cargo build --release --locked
COPY . .
# The stubs are newer than the real sources' timestamps: touch the real ones so cargo rebuilds them.
# The release profile keeps line tables (file:line in backtraces), nine tenths of the binary's size:
# they stay in this stage as target/release/lookalike.debug (`docker build --target build`, then copy
# it out to read a crash's addresses); the image ships the binary without them, its symbols kept.
RUN touch src/main.rs src/lib.rs api/src/lib.rs worker/src/lib.rs crates/*/src/lib.rs \
 && cargo build --release --locked --bin lookalike \
 && objcopy --only-keep-debug target/release/lookalike target/release/lookalike.debug \
 && objcopy --strip-debug --add-gnu-debuglink=target/release/lookalike.debug target/release/lookalike

FROM python:3.11-slim-bookworm AS assets
WORKDIR /src
ENV LOOKALIKE_ASSETS=/assets \
    LOOKALIKE_CACHE=/tmp/lookalike-cache
# Everything scripts/setup.sh reads: itself, the Lite0 converter and the CLIP weight rewrite it runs (in
# the pinned Python environment of pyenv.sh), and models/' text files.
COPY scripts/setup.sh scripts/convert_lite0.py scripts/pyenv.sh scripts/exact_int8.py scripts/
COPY models/ models/
# --copy: real files, no links into this stage (they would dangle in the final image);
# --strict: both models or fail (the cold-start model is not optional in an image).
RUN scripts/setup.sh --copy --strict

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lookalike \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home lookalike
WORKDIR /app
COPY --from=build /src/target/release/lookalike /usr/local/bin/lookalike
COPY --from=assets /assets /app/.lookalike
# classify.prior_map and the other files config/default.toml names, relative to WORKDIR.
COPY config/ /app/config/
RUN mkdir -p /app/.lookalike/data && chown -R 10001:10001 /app/.lookalike/data
USER 10001:10001
# `serve` and `api` answer on http.listen, a `worker` on worker.listen.
ENV LOOKALIKE_HTTP__LISTEN=0.0.0.0:8080 \
    LOOKALIKE_WORKER__LISTEN=0.0.0.0:8081 \
    LOOKALIKE_LOG__FORMAT=json
EXPOSE 8080 8081
# One check for every role: the port comes from the same variables the process reads, and a container
# runs one process, so whichever of the two ports answers is that process's.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD curl -fsS "http://127.0.0.1:${LOOKALIKE_HTTP__LISTEN##*:}/healthz" \
   || curl -fsS "http://127.0.0.1:${LOOKALIKE_WORKER__LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["lookalike"]
# `serve` (API and worker in one process, embedded index) by default; `api` and `worker` run apart
# with a Qdrant server (docker-compose.yml).
CMD ["serve"]
