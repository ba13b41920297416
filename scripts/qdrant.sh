#!/usr/bin/env bash
# A private Qdrant server for a test or benchmark run: its own storage directory and free ports on
# 127.0.0.1, stopped by `stop`.
#
#   eval "$(scripts/qdrant.sh start DIR)"   # sets QDRANT_URL (gRPC, what lookalike speaks) and QDRANT_HTTP
#   scripts/qdrant.sh stop DIR
#
# The server binary is $LOOKALIKE_QDRANT_BIN, by default ../shared/bin/qdrant beside the repository
# (Qdrant 1.18.3, the version compose and GitLab CI run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LOOKALIKE_QDRANT_BIN:-$root/../shared/bin/qdrant}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "${1:-}" in
  start)
    dir=${2:?usage: qdrant.sh start DIR}
    if [ ! -x "$bin" ]; then
      echo "qdrant.sh: no Qdrant server binary at $bin; set LOOKALIKE_QDRANT_BIN to one, or QDRANT_URL to a running Qdrant 1.18 server" >&2
      exit 1
    fi
    mkdir -p "$dir"
    http=$(free_port); grpc=$(free_port)
    while [ "$grpc" = "$http" ]; do grpc=$(free_port); done
    ( cd "$dir" && QDRANT__STORAGE__STORAGE_PATH="$dir/storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$dir/snapshots" \
        QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$http QDRANT__SERVICE__GRPC_PORT=$grpc \
        QDRANT__TELEMETRY_DISABLED=true QDRANT__LOG_LEVEL=WARN \
        exec "$bin" >"$dir/qdrant.log" 2>&1 ) &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; then
        echo "qdrant.sh: Qdrant $("$bin" --version 2>/dev/null | awk '{print $2}') on 127.0.0.1:$grpc (gRPC), $http (HTTP), storage $dir" >&2
        echo "export QDRANT_URL=http://127.0.0.1:$grpc QDRANT_HTTP=http://127.0.0.1:$http"
        exit 0
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.1
    done
    echo "qdrant.sh: the Qdrant server did not become ready; its log:" >&2
    tail -n 20 "$dir/qdrant.log" >&2 || true
    exit 1
    ;;
  stop)
    dir=${2:?usage: qdrant.sh stop DIR}
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/qdrant.sh start DIR | stop DIR" >&2
    exit 2
    ;;
esac
