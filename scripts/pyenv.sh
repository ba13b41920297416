#!/usr/bin/env bash
# A Python environment with the prototype's stack (Pillow, onnxruntime, numpy, requests), pinned, for
# the scripts that compare lookalike with it: the reference embeddings of tests/fixtures and the
# Python rows of the ingest benchmark. Prints the environment's python path.
#
#   PY=$(scripts/pyenv.sh) && "$PY" benches/python/ingest.py ...
#
# Made once in $LOOKALIKE_CACHE/pyenv (default ~/.cache/lookalike/pyenv) from the package registry.
set -euo pipefail
cache=${LOOKALIKE_CACHE:-$HOME/.cache/lookalike}
env_dir=$cache/pyenv
pins=(numpy==2.4.6 pillow==13.0.0 onnxruntime==1.31.1 requests==2.34.2)
stamp="$env_dir/.pins"
if [ ! -x "$env_dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "pyenv: making $env_dir (${pins[*]})" >&2
  rm -rf "$env_dir"
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  echo "${pins[*]}" >"$stamp"
fi
echo "$env_dir/bin/python"
