# Shared by scripts/eval-quality.sh and scripts/eval-duplicates.sh: each evaluated set gets a fresh
# `lookalike serve` (its own database, index folder and queue prefix), torn down afterwards.
# The caller sets $bin (the lookalike binary) and may fill the `settings` array with LOOKALIKE_*
# assignments for the service; reports and logs go to $work.

work=$(mktemp -d "${TMPDIR:-/tmp}/lookalike-eval.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
settings=()   # LOOKALIKE_* assignments for every service started (settings chosen on a development set)

# Runs `lookalike eval` on one folder against a fresh `lookalike serve`; extra eval arguments after
# the folder. The report goes to $work/<name>.json.
evaluate() {
  local name=$1 folder=$2; shift 2
  local id db port
  id=$(date +%s%N | tail -c 9)
  db=lookalike_quality_$id
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
  env "${settings[@]+"${settings[@]}"}" \
    LOOKALIKE_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" \
    LOOKALIKE_QUEUE__PREFIX="lookalike-quality-$id" \
    LOOKALIKE_INDEX__DATA_DIR="$work/index-$id" \
    LOOKALIKE_HTTP__LISTEN="127.0.0.1:$port" \
    LOOKALIKE_AUTH__ENABLED=false \
    "$bin" serve >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
  done
  echo "${eval_name:-eval}: $name ($folder)" >&2
  # Exit 1 means an image failed to ingest or a search failed: the report says which; keep it.
  "$bin" eval "$folder" --api "http://127.0.0.1:$port" --json --concurrency 2 "$@" >"$work/$name.json" \
    || echo "${eval_name:-eval}: $name: lookalike eval exited $? (failures are listed in its report)" >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
}

