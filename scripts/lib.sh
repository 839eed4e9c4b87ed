# shellcheck shell=bash
# Helpers shared by scripts/*.sh and .ci/run. Source it; it sets no shell options.
#
#   . "$(dirname "$0")/lib.sh"

KS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages the scripts need: kcat for the broker readiness probe and for
# peeking at topics, python3-avro + python3-confluent-kafka (used through
# /usr/bin/python3, not a pyenv/venv python) for scripts/check_topic.py.
# openssl builds the PKCS12 keystore of the SASL_SSL broker in internal/securitytest.
KS_APT_PACKAGES=(kcat python3-avro python3-confluent-kafka curl ca-certificates openssl)

ks_log() { printf '==> %s\n' "$*" >&2; }
ks_warn() { printf 'WARN: %s\n' "$*" >&2; }
ks_die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# ks_have CMD: is CMD on PATH?
ks_have() { command -v "$1" >/dev/null 2>&1; }

# ks_apt_missing PKG...: prints the packages that are not installed.
ks_apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

# ks_ensure_apt PKG...: installs the missing ones. Runs `apt-get update` only
# when the package lists are absent or the first install attempt fails.
ks_ensure_apt() {
  ks_have dpkg-query || {
    ks_warn "not a Debian system; make sure these are installed: $*"
    return 0
  }
  local missing
  mapfile -t missing < <(ks_apt_missing "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    ks_have sudo || ks_die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  ks_log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    "${sudo[@]}" apt-get update -q || ks_die "apt-get update failed"
  fi
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    ks_log "install failed; apt-get update and retry"
    "${sudo[@]}" apt-get update -q || ks_die "apt-get update failed"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
      ks_die "apt-get install ${missing[*]} failed"
  fi
}

# ks_ensure_tools: everything scripts/test.sh, e2e.sh and demo.sh use besides Go,
# Java and Maven (which the dev/CI machines come with).
ks_ensure_tools() {
  ks_ensure_apt "${KS_APT_PACKAGES[@]}"
  /usr/bin/python3 -c 'import avro.io, confluent_kafka' 2>/dev/null ||
    ks_die "/usr/bin/python3 cannot import avro and confluent_kafka (apt packages python3-avro, python3-confluent-kafka)"
  ks_have go || ks_die "go is not on PATH"
}

# ks_build: builds bin/keysetsync from the work tree.
ks_build() {
  ks_log "go build -o bin/keysetsync ./cmd/keysetsync"
  (cd "$KS_REPO_ROOT" && go build -o bin/keysetsync ./cmd/keysetsync)
}

# ks_wait_http URL SECONDS [PID]: polls URL until it answers 2xx. Fails after
# SECONDS, or at once if PID (the server's process) is given and has exited.
ks_wait_http() {
  local url=$1 timeout=$2 pid=${3:-} start=$SECONDS
  while :; do
    if curl -sf -o /dev/null --max-time 30 "$url"; then
      ks_log "$url answers (after $((SECONDS - start))s)"
      return 0
    fi
    if [ -n "$pid" ] && ! ks_alive "$pid"; then
      ks_warn "process $pid exited before $url answered"
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      ks_warn "$url did not answer within ${timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

# ks_alive PID: is PID a live (non-zombie) process?
ks_alive() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# ks_kill PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10), then SIGKILL.
ks_kill() {
  local pid=$1 timeout=${2:-10} i
  ks_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    ks_alive "$pid" || return 0
    sleep 0.1
  done
  ks_warn "pid $pid still alive after ${timeout}s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}
