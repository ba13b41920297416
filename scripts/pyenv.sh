#!/usr/bin/env bash
# A Python environment with the prototype's stack (Pillow, onnxruntime, numpy, requests), pinned, for
# the scripts that compare lookalike with it (the reference embeddings of tests/fixtures, the Python rows
# of the ingest benchmark) and for scripts/exact_int8.py (onnx), which setup.sh runs on the CLIP model.
# Prints the environment's python path.
#
#   PY=$(scripts/pyenv.sh) && "$PY" benches/python/ingest.py ...
#
# Made once in $LOOKALIKE_CACHE/pyenv (default ~/.cache/lookalike/pyenv) from the package registry.
set -euo pipefail
cache=${LOOKALIKE_CACHE:-$HOME/.cache/lookalike}
env_dir=$cache/pyenv
pins=(numpy==2.4.6 pillow==13.0.0 onnxruntime==1.31.1 requests==2.34.2 onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.7.0 typing_extensions==4.16.0)
stamp="$env_dir/.pins"
if [ ! -x "$env_dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "pyenv: making $env_dir (${pins[*]})" >&2
  rm -rf "$env_dir"
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  echo "${pins[*]}" >"$stamp"
fi
echo "$env_dir/bin/python"
