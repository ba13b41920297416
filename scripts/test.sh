#!/usr/bin/env bash
# The test command: starts the local services if needed, fetches the model and ONNX Runtime if needed,
# then runs every test of the workspace against the real Postgres, RabbitMQ and model.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p lookalike-vision   # extra arguments go to `cargo test`
#
# LOOKALIKE_MODELS_FROM=DIR reuses a local copy of the models instead of downloading them.
# QDRANT_URL=http://HOST:6334 uses that Qdrant server (1.18) instead of starting a private one.
# LOOKALIKE_TEST_SKIP="name other" leaves out the tests whose names contain these words (the GitLab
# job uses it for the test that must stop and start a Qdrant server binary of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/build-tools.sh          # meson, ninja, nasm: the build compiles dav1d (AVIF) from source
scripts/browser.sh >/dev/null   # Chromium + ChromeDriver for the web page test
if [ -n "${LOOKALIKE_MODELS_FROM:-}" ]; then
  scripts/setup.sh --models-from "$LOOKALIKE_MODELS_FROM"
else
  scripts/setup.sh
fi
scripts/fetch-corpus.sh   # the bad-image corpus (Pillow's and libjxl's test images), cached
# The Vendure photos for the README walkthrough test (tests/walkthrough.rs): cached in $LOOKALIKE_CACHE,
# about a second once downloaded; the test fails rather than skips without them.
scripts/fetch-datasets.sh vendure >/dev/null
export LOOKALIKE_REQUIRE_DATASETS=1

# The Qdrant server suite (crates/index/tests/server.rs), the separate api/worker processes and the
# model switch run against a real server: a private one (own storage, own ports, stopped on exit)
# unless QDRANT_URL names one. With LOOKALIKE_REQUIRE_QDRANT set, a test that finds no server fails.
if [ -z "${QDRANT_URL:-}" ]; then
  qdrant_dir=$(mktemp -d "${TMPDIR:-/tmp}/lookalike-qdrant.XXXXXX")
  trap 'scripts/qdrant.sh stop "$qdrant_dir"' EXIT
  eval "$(scripts/qdrant.sh start "$qdrant_dir")"
fi
export QDRANT_URL LOOKALIKE_REQUIRE_QDRANT=1
# Tests that run a server of their own (tests/private_qdrant.rs) start this binary.
export LOOKALIKE_QDRANT_BIN=${LOOKALIKE_QDRANT_BIN:-$(cd .. && pwd)/shared/bin/qdrant}
skip=()
for name in ${LOOKALIKE_TEST_SKIP:-}; do skip+=(--skip "$name"); done

# Each end-to-end test runs a service process whose model uses two threads; two tests at a time keep a
# 2-core machine busy without starving the jobs' own timeouts.
export RUST_BACKTRACE=1
cargo test --workspace --all-targets --locked "$@" -- --test-threads="${LOOKALIKE_TEST_THREADS:-2}" ${skip[@]+"${skip[@]}"}
