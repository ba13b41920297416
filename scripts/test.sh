#!/usr/bin/env bash
# The test command: starts the local services if needed, fetches the model and ONNX Runtime if needed,
# then runs every test of the workspace against the real Postgres, RabbitMQ and model.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p lookalike-vision   # extra arguments go to `cargo test`
#
# LOOKALIKE_MODELS_FROM=DIR reuses a local copy of the models instead of downloading them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
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

# Each end-to-end test runs a service process whose model uses two threads; two tests at a time keep a
# 2-core machine busy without starving the jobs' own timeouts.
export RUST_BACKTRACE=1
cargo test --workspace --all-targets --locked "$@" -- --test-threads="${LOOKALIKE_TEST_THREADS:-2}"
