#!/usr/bin/env bash
# Makes sure the local Postgres (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) that lookalike and its
# tests use are running: starts whichever is down, installs them from Debian's packages if absent.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port name seconds
  for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on port $1" >&2; return 1
}
install_pkgs() {
  command -v apt-get >/dev/null || { echo "services: please install $* yourself" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || install_pkgs postgresql
  echo "services: starting Postgres" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  wait_port 5432 Postgres 60
fi
# Tests connect as postgres without a password (trust auth on 127.0.0.1), as on the development machines.
psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null \
  || { echo "services: cannot connect to Postgres as postgres@127.0.0.1 (trust auth expected)" >&2; exit 1; }

if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || install_pkgs rabbitmq-server
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached || true
  wait_port 5672 RabbitMQ 90
fi
# The port opens before the broker accepts connections; wait until the app is really running.
for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
rabbitmqctl await_startup >/dev/null 2>&1 || true
echo "services: Postgres and RabbitMQ are up" >&2
