#!/usr/bin/env bash
# Keeps a long-lived cargo target directory from filling the disk: every rebuild of a test or bench
# binary leaves the old one behind (about 1.3 GB each with debug info), so only the newest executable of
# each name is kept. Libraries and incremental state are left alone, so nothing is recompiled.
#
#   scripts/prune-target.sh [TARGET_DIR]      # default $CARGO_TARGET_DIR, else ./target
set -euo pipefail
dir=${1:-${CARGO_TARGET_DIR:-target}}
for deps in "$dir"/debug/deps "$dir"/release/deps; do
  [ -d "$deps" ] || continue
  python3 - "$deps" <<'PY'
import collections, os, re, sys
deps = sys.argv[1]
groups = collections.defaultdict(list)
for f in os.listdir(deps):
    path = os.path.join(deps, f)
    m = re.fullmatch(r"(.+)-[0-9a-f]{16}", f)
    if m and os.path.isfile(path) and os.access(path, os.X_OK):
        groups[m.group(1)].append((os.path.getmtime(path), path))
freed = 0
for paths in groups.values():
    for _, path in sorted(paths)[:-1]:
        freed += os.path.getsize(path)
        os.remove(path)
if freed:
    print(f"prune-target: {freed / 1e9:.1f} GB of superseded executables removed from {deps}", file=sys.stderr)
PY
done
