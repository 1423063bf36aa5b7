#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (for the worker/agent/coordinator
# images and the Docker runtime tests). Idempotent: exits at once if `docker info` works;
# else installs the missing Debian packages (docker.io, debootstrap, iptables,
# docker-compose) and starts
# dockerd in the background (CI machines have no systemd), then waits until it answers.
# Run as root.
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/slmfleet-dockerd.log}"
TIMEOUT_S="${DOCKERD_TIMEOUT_S:-60}"

die() {
  echo "docker-engine.sh: error: $*" >&2
  exit 1
}

engine_answers() {
  timeout 10 docker info >/dev/null 2>&1
}

# A docker client may be installed on its own (/usr/local/bin/docker): look for the daemon.
needed=()
command -v dockerd >/dev/null || needed+=(docker.io)
command -v debootstrap >/dev/null || needed+=(debootstrap)
command -v iptables >/dev/null || needed+=(iptables)
# docker-compose.yml's test: Debian's docker-compose (1.29) unless `docker compose` works
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
  || needed+=(docker-compose)
if [ ${#needed[@]} -eq 0 ] && engine_answers; then
  echo "docker engine answers"
  exit 0
fi
if [ ${#needed[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    die "missing system packages: ${needed[*]}; run: sudo apt-get install ${needed[*]}"
  fi
  echo "installing system packages: ${needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${needed[@]}" >/dev/null
fi

log_tail() {
  if [ -n "$pid" ] && [ -f "$LOG" ]; then
    echo "last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
  else
    echo "(dockerd was not started by this script: see its own log)" >&2
  fi
}

pid=""
if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  echo "dockerd is already running (pid $(cat /var/run/docker.pid))"
else
  [ "$(id -u)" -eq 0 ] || die "dockerd is not running and starting it needs root"
  echo "starting dockerd in the background (log: $LOG)"
  nohup dockerd >"$LOG" 2>&1 &
  pid=$!
fi

echo "waiting up to ${TIMEOUT_S}s for the docker engine"
deadline=$((SECONDS + TIMEOUT_S))
until engine_answers; do
  if [ $SECONDS -ge $deadline ]; then
    echo "docker-engine.sh: error: the docker engine did not answer within ${TIMEOUT_S}s" >&2
    log_tail
    exit 1
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    echo "docker-engine.sh: error: dockerd exited while starting" >&2
    log_tail
    exit 1
  fi
  sleep 1
done
echo "docker engine answers"
