#!/usr/bin/env bash
# The README's near-duplicate figures, in one run: `dedupe.threshold` chosen on a development set, then
# every reported set evaluated with it, each against a fresh service (own database, index and queue).
#
#   scripts/eval-duplicates.sh             # choose on saleor, then evaluate vendure and fashion-mnist
#   scripts/eval-duplicates.sh --no-tune   # evaluate with config/default.toml's threshold as it is
#
# `lookalike eval FOLDER --duplicates` uploads every image of a set, then six altered copies of each
# (crop, shrink, pad, tone, mirror, JPEG; fixed seed), and reports over a grid of thresholds how many
# copies would be grouped with their original and how many distinct images with each other, plus what
# the service grouped at its own threshold.
#
# Chosen on Saleor (45 renders: t-shirts, hoodies and shoes of one design in several colours, distinct
# products that look closest to each other, which is what a false duplicate is on a shopping site; its
# sibling views of one product are not counted as false), reported on Vendure (54 real photos) and
# Fashion-MNIST (3,000 28x28 test-split thumbnails, copies of every third). The chosen threshold is given
# to the service for every reported set (LOOKALIKE_DEDUPE__THRESHOLD) and written into the result file;
# config/default.toml carries it.
#
# Writes bench-results/duplicates-<date>.json: date, machine, command, the choice, and each set's
# `lookalike eval --duplicates --json` report. Uses the release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
tune=1
[ "${1:-}" = --no-tune ] && tune=0
sets=(vendure fashion-mnist)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/lookalike-target}
export LOOKALIKE_CACHE=${LOOKALIKE_CACHE:-/var/tmp/lookalike-cache}
scripts/services.sh
scripts/setup.sh ${LOOKALIKE_MODELS_FROM:+--models-from "$LOOKALIKE_MODELS_FROM"} >/dev/null
datasets=.lookalike/datasets
scripts/fetch-datasets.sh vendure saleor fashion-mnist >/dev/null
cargo build --release --locked --bin lookalike >&2
bin=$CARGO_TARGET_DIR/release/lookalike
eval_name=eval-duplicates
source scripts/eval-service.sh

started=$(date -u +%FT%TZ)
if [ "$tune" = 1 ]; then
  evaluate saleor "$datasets/saleor" --duplicates --tune-duplicates "$work/tuned.json"
  threshold=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["chosen"]; print(c["threshold"] if c else "")' "$work/tuned.json")
  [ -n "$threshold" ] || { echo "eval-duplicates: no threshold of the grid kept false duplicates within the budget" >&2; exit 1; }
  settings=("LOOKALIKE_DEDUPE__THRESHOLD=$threshold")
  echo "eval-duplicates: chosen dedupe.threshold = $threshold" >&2
fi
# Fashion-MNIST: copies of every third image (1,000 x 6), the false-duplicate rate over all 3,000.
[ "$tune" = 1 ] || sets=(saleor "${sets[@]}")
for set in "${sets[@]}"; do
  every=1; [ "$set" = fashion-mnist ] && every=3
  evaluate "$set" "$datasets/$set" --duplicates --alter-every "$every"
done

out=bench-results/duplicates-$(date -u +%F).json
python3 - "$work" "$out" "$started" "$tune" "$*" <<'PY'
import json, os, platform, subprocess, sys
work, out, started, tune, args = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = lambda name: json.load(open(f"{work}/{name}.json"))
result = {
    "date": started,
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1), "kernel": platform.release()},
    "command": ("scripts/eval-duplicates.sh " + args).strip(),
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "chosen_on": "saleor (its report below is the set the threshold was chosen on)" if tune == "1" else None,
    "tuning": load("tuned") if tune == "1" else None,
    "sets": {s: load(s) for s in ["vendure", "saleor", "fashion-mnist"] if os.path.exists(f"{work}/{s}.json")},
}
json.dump(result, open(out, "w"), indent=1)
print(out)
PY
