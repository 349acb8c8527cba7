#!/usr/bin/env bash
# Starts throwaway PostgreSQL, Redis, Kafka-protocol (nisshi) and ClickHouse servers on
# loopback, on free ports, in a temporary directory, installing what is missing; prints `export`
# lines for the URLs the tests and benchmarks read. Stop them with `scripts/services.sh stop <dir>`.
#
#   eval "$(scripts/services.sh start)"      # all four; sets TEST_TALLY_* and TEST_TALLY_SERVICES_DIR
#   eval "$(scripts/services.sh start postgres redis)"
#   scripts/services.sh stop "$TEST_TALLY_SERVICES_DIR"
#
# Nothing here touches system services: every server runs as a child of this script's
# caller, with its data under one directory that `stop` removes.
set -euo pipefail

CACHE="${TEST_TALLY_CACHE_DIR:-$HOME/.cache/tally}"
NISSHI_VERSION="0.8.1"

log() { echo "services: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* from apt"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

# A port nothing listens on (checked by connecting; bash only, no python needed), below
# Linux's ephemeral range (32768+): a port there can be taken by an outgoing connection's
# local end between the check and the server's bind ("Address already in use").
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % 22000))
    if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  log "no free port found"; return 1
}

wait_port() { # port, name
  for _ in $(seq 1 200); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$2 did not open port $1"; return 1
}

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

start_postgres() { # dir
  local dir="$1/postgres" bin port
  bin="$(pg_bindir)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then apt_install postgresql postgresql-contrib; bin="$(pg_bindir)"; fi
  port="$(free_port)"
  mkdir -p "$dir"
  # initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
  local run=()
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$dir"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
     -c full_page_writes=off -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" \
    start >&2
  echo "export TEST_TALLY_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
  echo "export TEST_TALLY_POSTGRES_BIN=$bin"
  echo "export TEST_TALLY_POSTGRES_DATA=$dir/data"
}

start_redis() { # dir
  local dir="$1/redis" port
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  port="$(free_port)"
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
  wait_port "$port" redis
  echo "export TEST_TALLY_REDIS_URL=redis://127.0.0.1:$port"
}

# The broker is built from crates.io once per machine and kept outside the checkout. It needs
# rustc >= 1.96: stable if it is new enough, else an installed nightly.
nisshi_bin() {
  local bin="$CACHE/nisshi-$NISSHI_VERSION/bin/nisshi"
  if [ ! -x "$bin" ]; then
    local toolchain=""
    for t in stable nightly; do
      local v
      v="$(rustc +"$t" --version 2>/dev/null | awk '{print $2}' | cut -d. -f2 || true)"
      if [ -n "$v" ] && [ "$v" -ge 96 ]; then toolchain="$t"; break; fi
    done
    if [ -z "$toolchain" ]; then
      log "nisshi $NISSHI_VERSION needs rustc >= 1.96; neither stable nor nightly is that new"
      return 1
    fi
    log "building nisshi $NISSHI_VERSION with the $toolchain toolchain (once per machine, ~10 min)"
    cargo +"$toolchain" install --locked nisshi --version "$NISSHI_VERSION" \
      --root "$CACHE/nisshi-$NISSHI_VERSION" >&2
  fi
  echo "$bin"
}

start_kafka() { # dir
  local dir="$1/kafka" port bin
  bin="$(nisshi_bin)"
  port="$(free_port)"
  mkdir -p "$dir"
  # Started directly (not from a subshell, whose saved descriptors the broker would inherit,
  # keeping the caller's `$(…)` open), with every standard stream redirected.
  nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "memory://nisshi/" \
    --group-initial-rebalance-delay 100ms \
    </dev/null >"$dir/broker.log" 2>&1 &
  echo $! >"$dir/broker.pid"
  wait_port "$port" nisshi
  echo "export TEST_TALLY_KAFKA_BROKERS=127.0.0.1:$port"
  echo "export TEST_TALLY_NISSHI_BIN=$bin"
}

# Debian's clickhouse-server (18.16): the forecast exporter's HTTP interface is all the tests
# use. Its own minimal configuration: loopback only, data under the directory, no system paths.
start_clickhouse() { # dir
  local dir="$1/clickhouse" http tcp
  command -v clickhouse-server >/dev/null 2>&1 || apt_install clickhouse-server
  http="$(free_port)"
  tcp="$(free_port)"
  mkdir -p "$dir"
  cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/server.err.log</errorlog></logger>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
</yandex>
EOF
  cat >"$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
  nohup clickhouse-server --config-file="$dir/config.xml" </dev/null >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/clickhouse.pid"
  wait_port "$http" clickhouse
  echo "export TEST_TALLY_CLICKHOUSE_URL=http://127.0.0.1:$http"
}

stop_all() { # dir
  local dir="$1"
  [ -d "$dir" ] || return 0
  if [ -f "$dir/kafka/broker.pid" ]; then kill "$(cat "$dir/kafka/broker.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/redis/redis.pid" ]; then kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/clickhouse/clickhouse.pid" ]; then kill "$(cat "$dir/clickhouse/clickhouse.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/postgres/data" ]; then
    local run=()
    [ "$(id -u)" -eq 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$(pg_bindir)/pg_ctl" -D "$dir/postgres/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start)
    shift
    wanted=("$@")
    [ ${#wanted[@]} -gt 0 ] || wanted=(postgres redis kafka clickhouse)
    dir="$(mktemp -d /tmp/tally-services.XXXXXX)"
    chmod 755 "$dir"
    echo "export TEST_TALLY_SERVICES_DIR=$dir"
    for service in "${wanted[@]}"; do
      case "$service" in
        postgres|redis|kafka|clickhouse) "start_$service" "$dir" ;;
        *) log "unknown service $service (postgres, redis, kafka, clickhouse)"; exit 2 ;;
      esac
    done
    ;;
  stop)
    stop_all "${2:?usage: services.sh stop <dir>}"
    ;;
  *)
    echo "usage: $0 start | stop <dir>" >&2
    exit 2
    ;;
esac
