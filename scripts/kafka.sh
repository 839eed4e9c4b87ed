#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft combined mode) for local
# development, tests and CI, run straight from Maven Central jars: no Docker,
# no tarball download.
#
#   scripts/kafka.sh start    resolve jars (once), format storage (once), start, wait until ready
#   scripts/kafka.sh stop     SIGTERM, wait, SIGKILL if needed
#   scripts/kafka.sh restart  stop, then start
#   scripts/kafka.sh status   exit 0 if the broker answers an admin (metadata) request
#   scripts/kafka.sh wait     wait until the broker answers (bounded)
#   scripts/kafka.sh reset    stop and delete data and logs (jars are kept)
#   scripts/kafka.sh logs     tail the broker log
#   scripts/kafka.sh topics ARGS...   org.apache.kafka.tools.TopicCommand (adds --bootstrap-server)
#   scripts/kafka.sh tool CLASS ARGS...  run any Kafka main class on the broker's class path,
#                                        e.g. org.apache.kafka.tools.ProducerPerformance
#   scripts/kafka.sh libs     resolve the jars only; print their directory
#
# Environment:
#   KEYSETSYNC_KAFKA_HOME   state dir (default ~/.cache/keysetsync-kafka): libs/, data/, logs/,
#                           server.properties, kafka.pid
#   KAFKA_PORT              PLAINTEXT listener port (default 9092)
#   KAFKA_CONTROLLER_PORT   controller listener port (default 9093)
#   KAFKA_HOST              listen/advertise address (default 127.0.0.1)
#   KAFKA_START_TIMEOUT     seconds to wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS         default "-Xms256m -Xmx512m"
#   KAFKA_READY_PROBE       kcat (default when kcat is installed) or java
#   KAFKA_SECURITY          plaintext (default: only the PLAINTEXT listener) or sasl_ssl: also a
#                           SASL_SSL listener on KAFKA_SASL_SSL_PORT with PLAIN, SCRAM-SHA-256 and
#                           SCRAM-SHA-512 (the PLAINTEXT listener stays, for the probe and the
#                           inter-broker traffic). Settings of sasl_ssl:
#     KAFKA_SASL_SSL_PORT          SASL_SSL listener port (default 9094)
#     KAFKA_SSL_KEYSTORE           PKCS12 keystore with the broker's key and certificate (required)
#     KAFKA_SSL_KEYSTORE_PASSWORD  its password (required)
#     KAFKA_SASL_USERS             name:password,... (default alice:alice-secret): SCRAM users
#                                  created when the storage is formatted, and the PLAIN users;
#                                  names and passwords of [A-Za-z0-9._@+=-]
# Changing the ports, the security mode or the SCRAM users of an already formatted data dir is
# not supported: `reset` first.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_SRC="$SCRIPT_DIR/kafka"

KHOME="${KEYSETSYNC_KAFKA_HOME:-$HOME/.cache/keysetsync-kafka}"
KHOST="${KAFKA_HOST:-127.0.0.1}"
KPORT="${KAFKA_PORT:-9092}"
KCPORT="${KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
BOOTSTRAP="$KHOST:$KPORT"
SECURITY="${KAFKA_SECURITY:-plaintext}"
KSPORT="${KAFKA_SASL_SSL_PORT:-9094}"
SASL_USERS="${KAFKA_SASL_USERS:-alice:alice-secret}"

LIBS="$KHOME/libs"
DATA="$KHOME/data"
LOGS="$KHOME/logs"
CONF="$KHOME/server.properties"
PIDFILE="$KHOME/kafka.pid"

log() { printf 'kafka: %s\n' "$*" >&2; }
die() {
  printf 'kafka: ERROR: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"; }

lock() {
  mkdir -p "$KHOME"
  exec 9>"$KHOME/.lock"
  flock -w 600 9 || die "could not lock $KHOME/.lock"
}

# ---------------------------------------------------------------- jars

resolve_libs() {
  need java "install a JDK/JRE 17+, e.g. apt-get install openjdk-17-jre-headless"
  local stamp
  stamp="$(sha256sum "$CONF_SRC/pom.xml" | cut -d' ' -f1)"
  if [ -f "$LIBS/.pom.sha256" ] && [ "$(cat "$LIBS/.pom.sha256")" = "$stamp" ]; then
    return 0
  fi
  need mvn "install Maven, e.g. apt-get install maven"
  local tmp="$KHOME/libs.tmp.$$" t0=$SECONDS
  log "resolving Kafka jars with Maven into $LIBS (once)"
  rm -rf "$tmp"
  if ! mvn -q -B -f "$CONF_SRC/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KHOME/mvn.log" 2>&1; then
    tail -n 40 "$KHOME/mvn.log" >&2
    rm -rf "$tmp"
    die "maven could not resolve the jars (full log: $KHOME/mvn.log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar in $tmp"
  echo "$stamp" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  log "resolved $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - t0))s ($(kafka_version))"
}

kafka_version() {
  local j
  j="$(find "$LIBS" -maxdepth 1 -name 'kafka_2.13-*.jar' | head -n1)"
  j="${j##*/kafka_2.13-}"
  echo "Kafka ${j%.jar}"
}

# run_class CLASS ARGS...: a Kafka main class, logging WARN+ to stderr only.
run_class() {
  java -Xms64m -Xmx512m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CONF_SRC/tools-log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

# ---------------------------------------------------------------- state

# is_broker PID: PID runs kafka.Kafka with our server.properties.
is_broker() {
  local args=() a main=0 conf=0
  { mapfile -d '' -t args <"/proc/$1/cmdline"; } 2>/dev/null || return 1
  for a in "${args[@]}"; do
    [ "$a" = kafka.Kafka ] && main=1
    [ "$a" = "$CONF" ] && conf=1
  done
  [ "$main$conf" = 11 ]
}

# pid_of: prints the pid of our broker, from the pid file or, if that is lost or
# stale, by looking for it in /proc.
pid_of() {
  local pid p
  pid="$(cat "$PIDFILE" 2>/dev/null)" || pid=""
  if [[ $pid =~ ^[0-9]+$ ]] && is_broker "$pid"; then
    echo "$pid"
    return 0
  fi
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    if is_broker "$pid"; then
      echo "$pid" >"$PIDFILE" 2>/dev/null || true
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# probe: one admin request; 0 if the broker answered and lists itself.
probe() {
  local how="${KAFKA_READY_PROBE:-}"
  port_open "$KPORT" || return 1
  if [ -z "$how" ]; then
    if command -v kcat >/dev/null 2>&1; then how=kcat; else how=java; fi
  fi
  case "$how" in
  kcat)
    # Metadata request; the broker only serves it once it is registered and unfenced.
    kcat -L -b "$BOOTSTRAP" -m 3 2>/dev/null | grep -Eq '^ +broker [0-9]+ at '
    ;;
  java)
    [ -d "$LIBS" ] || return 1
    timeout 20 java -Xmx128m -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$CONF_SRC/tools-log4j2.properties" -cp "$LIBS/*" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" 2>/dev/null |
      grep -q 'ApiVersions'
    ;;
  *) die "KAFKA_READY_PROBE must be kcat or java, not $how" ;;
  esac
}

# alive PID: a live, non-zombie process.
alive() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}

port_open() { (exec 3<>"/dev/tcp/$KHOST/$1") 2>/dev/null; }

show_logs() {
  local n="${1:-40}"
  if [ -f "$LOGS/server.log" ]; then
    log "---- last $n lines of $LOGS/server.log"
    tail -n "$n" "$LOGS/server.log" >&2
  fi
  if [ -s "$LOGS/stdout.log" ]; then
    log "---- last $n lines of $LOGS/stdout.log"
    tail -n "$n" "$LOGS/stdout.log" >&2
  fi
}

# wait_ready [PID]: polls with admin requests until ready, the deadline, or PID dying.
wait_ready() {
  local pid="${1:-}" t0=$SECONDS
  log "waiting for $BOOTSTRAP to answer (up to ${START_TIMEOUT}s)"
  while :; do
    if probe; then
      log "ready on $BOOTSTRAP after $((SECONDS - t0))s"
      return 0
    fi
    if [ -n "$pid" ] && ! alive "$pid"; then
      show_logs 30
      die "broker process $pid exited during startup"
    fi
    if [ $((SECONDS - t0)) -ge "$START_TIMEOUT" ]; then
      show_logs 30
      return 1
    fi
    sleep 0.5
  done
}

# check_security: the settings of KAFKA_SECURITY are complete and well-formed.
check_security() {
  case "$SECURITY" in
  plaintext) return 0 ;;
  sasl_ssl) ;;
  *) die "KAFKA_SECURITY must be plaintext or sasl_ssl, not $SECURITY" ;;
  esac
  [ -n "${KAFKA_SSL_KEYSTORE:-}" ] || die "KAFKA_SECURITY=sasl_ssl needs KAFKA_SSL_KEYSTORE (a PKCS12 file)"
  [ -r "$KAFKA_SSL_KEYSTORE" ] || die "KAFKA_SSL_KEYSTORE $KAFKA_SSL_KEYSTORE is not readable"
  [ -n "${KAFKA_SSL_KEYSTORE_PASSWORD:-}" ] || die "KAFKA_SECURITY=sasl_ssl needs KAFKA_SSL_KEYSTORE_PASSWORD"
  [[ $KAFKA_SSL_KEYSTORE_PASSWORD =~ ^[^\\\"]+$ ]] || die "KAFKA_SSL_KEYSTORE_PASSWORD must not contain a backslash or a quote"
  local u
  for u in ${SASL_USERS//,/ }; do
    [[ $u =~ ^[A-Za-z0-9._@+=-]+:[A-Za-z0-9._@+=-]+$ ]] || die "KAFKA_SASL_USERS: want name:password,... of [A-Za-z0-9._@+=-]"
  done
}

render_config() {
  local t el="" ea="" ep=""
  if [ "$SECURITY" = sasl_ssl ]; then
    el=",SASL_SSL://$KHOST:$KSPORT" ea=",SASL_SSL://$KHOST:$KSPORT" ep=",SASL_SSL:SASL_SSL"
  fi
  t="$(cat "$CONF_SRC/server.properties.in")"
  t="${t//@EXTRA_LISTENERS@/$el}"
  t="${t//@EXTRA_ADVERTISED@/$ea}"
  t="${t//@EXTRA_PROTOCOLS@/$ep}"
  if [ "$SECURITY" = sasl_ssl ]; then
    local s plain="" u
    for u in ${SASL_USERS//,/ }; do
      plain+=" user_${u%%:*}=\"${u#*:}\""
    done
    s="$(cat "$CONF_SRC/sasl_ssl.properties.in")"
    s="${s//@SASL_SSL_PORT@/$KSPORT}"
    s="${s//@KEYSTORE@/$KAFKA_SSL_KEYSTORE}"
    s="${s//@KEYSTORE_PASSWORD@/$KAFKA_SSL_KEYSTORE_PASSWORD}"
    s="${s//@PLAIN_USERS@/${plain# }}"
    t+=$'\n'"$s"
  fi
  t="${t//@HOST@/$KHOST}"
  t="${t//@PORT@/$KPORT}"
  t="${t//@CONTROLLER_PORT@/$KCPORT}"
  t="${t//@LOG_DIR@/$DATA}"
  # It may hold passwords (sasl_ssl): readable by its owner only.
  (umask 077 && printf '%s\n' "$t" >"$CONF.tmp")
  mv "$CONF.tmp" "$CONF"
}

format_storage() {
  [ -f "$DATA/meta.properties" ] && return 0
  local id
  id="$(run_class kafka.tools.StorageTool random-uuid)" || die "StorageTool random-uuid failed"
  log "formatting $DATA (cluster id $id, standalone KRaft quorum)"
  mkdir -p "$DATA"
  local scram=() u
  if [ "$SECURITY" = sasl_ssl ]; then
    for u in ${SASL_USERS//,/ }; do
      scram+=(--add-scram "SCRAM-SHA-256=[name=${u%%:*},password=${u#*:}]"
        --add-scram "SCRAM-SHA-512=[name=${u%%:*},password=${u#*:}]")
    done
    log "creating SCRAM-SHA-256/512 credentials of: $(for u in ${SASL_USERS//,/ }; do printf '%s ' "${u%%:*}"; done)"
  fi
  run_class kafka.tools.StorageTool format --cluster-id "$id" --config "$CONF" --standalone "${scram[@]}" \
    >"$LOGS/format.log" 2>&1 || {
    cat "$LOGS/format.log" >&2
    die "formatting failed; try: $0 reset"
  }
}

# ---------------------------------------------------------------- commands

cmd_start() {
  lock
  local pid t0=$SECONDS
  if pid="$(pid_of)"; then
    if probe; then
      log "already running (pid $pid) on $BOOTSTRAP"
      return 0
    fi
    log "pid $pid is running but not answering yet"
    wait_ready "$pid" || die "broker (pid $pid) did not become ready within ${START_TIMEOUT}s; see $LOGS"
    return 0
  fi
  if port_open "$KPORT"; then
    if probe; then
      log "a Kafka broker not started by this script already answers on $BOOTSTRAP; using it"
      return 0
    fi
    die "port $KPORT on $KHOST is in use by something else (set KAFKA_PORT)"
  fi
  port_open "$KCPORT" && die "controller port $KCPORT on $KHOST is in use (set KAFKA_CONTROLLER_PORT)"
  check_security
  if [ "$SECURITY" = sasl_ssl ] && port_open "$KSPORT"; then
    die "SASL_SSL port $KSPORT on $KHOST is in use (set KAFKA_SASL_SSL_PORT)"
  fi

  resolve_libs
  mkdir -p "$DATA" "$LOGS"
  render_config
  format_storage

  log "starting $(kafka_version) on $BOOTSTRAP (controller $KHOST:$KCPORT), state in $KHOME"
  [ "$SECURITY" = sasl_ssl ] && log "SASL_SSL listener on $KHOST:$KSPORT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
  # New session (immune to the caller's Ctrl-C/hangup), stdio detached from the
  # caller, lock fd closed, the pid written by the process that execs java.
  # shellcheck disable=SC2086,SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOGS" \
    -Dlog4j2.configurationFile="$CONF_SRC/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONF" \
    </dev/null >"$LOGS/stdout.log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    pid="$(pid_of)" && break
    sleep 0.1
  done
  [ -n "$pid" ] || {
    show_logs 40
    die "broker did not start"
  }
  if ! wait_ready "$pid"; then
    log "not ready within ${START_TIMEOUT}s; stopping it"
    stop_pid "$pid"
    die "broker did not become ready within ${START_TIMEOUT}s (logs in $LOGS)"
  fi
  log "started in $((SECONDS - t0))s (pid $pid); stop it with: $0 stop"
}

stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    alive "$pid" || {
      rm -f "$PIDFILE"
      return 0
    }
    sleep 0.1
  done
  log "pid $pid still running after ${STOP_TIMEOUT}s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  rm -f "$PIDFILE"
}

cmd_stop() {
  lock
  local pid t0=$SECONDS
  if ! pid="$(pid_of)"; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping pid $pid"
  stop_pid "$pid"
  log "stopped in $((SECONDS - t0))s"
}

cmd_status() {
  local pid
  if probe; then
    if pid="$(pid_of)"; then
      log "running (pid $pid) on $BOOTSTRAP"
    else
      log "a broker answers on $BOOTSTRAP (not started by this script)"
    fi
    return 0
  fi
  if pid="$(pid_of)"; then
    log "pid $pid is running but $BOOTSTRAP does not answer"
  else
    log "not running"
  fi
  return 1
}

cmd_wait() {
  local pid=""
  pid="$(pid_of)" || pid=""
  wait_ready "$pid" || die "$BOOTSTRAP did not answer within ${START_TIMEOUT}s"
}

cmd_reset() {
  cmd_stop
  log "deleting $DATA $LOGS (jars in $LIBS are kept)"
  rm -rf "$DATA" "$LOGS" "$CONF" "$PIDFILE"
}

cmd_topics() {
  resolve_libs
  case " $* " in
  *" --bootstrap-server "*) run_class org.apache.kafka.tools.TopicCommand "$@" ;;
  *) run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
  esac
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
wait) cmd_wait ;;
reset) cmd_reset ;;
restart)
  cmd_stop
  exec 9>&-
  cmd_start
  ;;
logs) tail -n "${2:-100}" "$LOGS/server.log" ;;
topics)
  shift
  cmd_topics "$@"
  ;;
tool)
  shift
  [ $# -ge 1 ] || die "usage: $0 tool MAIN_CLASS [ARGS...]"
  resolve_libs
  run_class "$@"
  ;;
libs)
  resolve_libs
  echo "$LIBS"
  ;;
-h | --help | help) usage 0 ;;
*) usage ;;
esac
