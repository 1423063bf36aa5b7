#!/usr/bin/env bash
# Install the slmfleet node agent on a Raspberry Pi (Raspberry Pi OS 64-bit) as a systemd
# service. Run as root; safe to run again (upgrades the code, keeps the config).
#
#   sudo deploy/pi/install.sh [SOURCE] [--coordinator HOST:PORT --token TOKEN --key KEY]
#
# SOURCE is the project directory or a built wheel (default: this checkout). With
# --coordinator/--token/--key, /etc/slmfleet/agent.env is (re)written; without, it is
# kept. KEY is the hub's public CURVE key, printed by the coordinator at start (and in its
# <data-dir>/hub.key).
# Set WHEELHOUSE=DIR to let pip pick up prebuilt wheels (e.g. llama-cpp-python) from DIR,
# and CMAKE_ARGS to pass build flags to the llama-cpp-python build.
set -euo pipefail
umask 022

PREFIX=/opt/slmfleet
VENV="$PREFIX/.venv"
STATE_DIR=/var/lib/slmfleet
CONF_DIR=/etc/slmfleet
ENV_FILE="$CONF_DIR/agent.env"
UNIT_NAME=slmfleet-agent.service
UNIT_PATH="/etc/systemd/system/$UNIT_NAME"
SERVICE_USER=slmfleet
APT_PACKAGES=(python3-venv python3-dev cmake build-essential git)

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# --- arguments -------------------------------------------------------------------------

source_arg=""
coordinator=""
token=""
key=""
while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator)
      [ $# -ge 2 ] || die "--coordinator needs a value, e.g. --coordinator 192.168.1.10:5555"
      coordinator=$2
      shift 2
      ;;
    --coordinator=*)
      coordinator=${1#--coordinator=}
      shift
      ;;
    --token)
      [ $# -ge 2 ] || die "--token needs a value: the coordinator's join token"
      token=$2
      shift 2
      ;;
    --token=*)
      token=${1#--token=}
      shift
      ;;
    --key)
      [ $# -ge 2 ] || die "--key needs a value: the coordinator's hub key (40 characters)"
      key=$2
      shift 2
      ;;
    --key=*)
      key=${1#--key=}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      die "unknown option $1 (see --help)"
      ;;
    *)
      [ -z "$source_arg" ] || die "more than one SOURCE given: $source_arg and $1"
      source_arg=$1
      shift
      ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 ..."

source_path=${source_arg:-$repo_root}
if [ -d "$source_path" ]; then
  source_path=$(cd "$source_path" && pwd)
  [ -f "$source_path/pyproject.toml" ] \
    || die "$source_path has no pyproject.toml; give the slmfleet project directory or a wheel"
elif [ -f "$source_path" ]; then
  case "$source_path" in
    *.whl) source_path=$(cd "$(dirname "$source_path")" && pwd)/$(basename "$source_path") ;;
    *) die "$source_path is not a wheel (.whl); give the project directory or a wheel" ;;
  esac
else
  die "no project directory or wheel at $source_path"
fi

[ -f "$script_dir/$UNIT_NAME" ] || die "the unit file $script_dir/$UNIT_NAME is missing"

# Only characters that need no quoting in a systemd environment file.
if [ -n "$coordinator" ] && ! [[ "$coordinator" =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]]; then
  die "--coordinator must be HOST:PORT, e.g. 192.168.1.10:5555 (got '$coordinator')"
fi
if [ -n "$token" ] && ! [[ "$token" =~ ^[A-Za-z0-9._~+/=@%:-]+$ ]]; then
  die "--token may only hold letters, digits and ._~+/=@%:- (no spaces or quotes)"
fi

# --- system packages ---------------------------------------------------------------------

missing=()
for package in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "slmfleet needs Python >= 3.11 (found $(python3 --version 2>&1)); use Raspberry Pi OS bookworm or newer"

# --- service user and directories ----------------------------------------------------------

if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  echo "creating system user $SERVICE_USER"
  useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
    --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# `vcgencmd get_throttled` needs /dev/vcio, which belongs to the video group.
if getent group video >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
  usermod -a -G video "$SERVICE_USER"
fi
# The docker runtime (the agent's default on a Pi whose engine answers) talks to the
# engine's socket, which belongs to the docker group.
if getent group docker >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx docker; then
  usermod -a -G docker "$SERVICE_USER"
fi
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR" "$STATE_DIR/agent"
install -d -m 0755 "$PREFIX" "$CONF_DIR"

# --- virtual environment and the project -----------------------------------------------------

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

pip_args=()
if [ -n "${WHEELHOUSE:-}" ]; then
  [ -d "$WHEELHOUSE" ] || die "WHEELHOUSE=$WHEELHOUSE is not a directory"
  pip_args+=(--find-links "$WHEELHOUSE")
fi
echo "installing slmfleet from $source_path into $VENV"
echo "(the first install compiles llama-cpp-python; this can take a long time on a Pi)"
"$VENV/bin/python" -m pip install "${pip_args[@]}" "$source_path"
# Make sure the code given here is what runs, even if the same version was installed before.
"$VENV/bin/python" -m pip install --quiet --no-deps --force-reinstall "$source_path"
[ -x "$VENV/bin/slmfleet" ] || die "$VENV/bin/slmfleet is missing after the install"

# --- configuration ---------------------------------------------------------------------------

env_value() {  # env_value KEY FILE: the value of KEY in an environment file, or nothing
  sed -n "s/^[[:space:]]*$1=[\"']\{0,1\}\([^\"']*\)[\"']\{0,1\}[[:space:]]*\$/\1/p" "$2" | tail -n 1
}

if [ -n "$coordinator" ] || [ -n "$token" ] || [ -n "$key" ]; then
  if [ -f "$ENV_FILE" ]; then
    [ -n "$coordinator" ] || coordinator=$(env_value SLMFLEET_COORDINATOR "$ENV_FILE")
    [ -n "$token" ] || token=$(env_value SLMFLEET_TOKEN "$ENV_FILE")
    [ -n "$key" ] || key=$(env_value SLMFLEET_COORDINATOR_KEY "$ENV_FILE")
  fi
  [ -n "$coordinator" ] || die "give --coordinator HOST:PORT as well"
  [ -n "$token" ] || die "give --token as well (on the coordinator: <data-dir>/join_token)"
  [ ${#key} -eq 40 ] || die "give --key as well: the coordinator's 40-character hub key (printed at its start, in <data-dir>/hub.key)"
  tmp_env=$(mktemp "$CONF_DIR/.agent.env.XXXXXX")
  trap 'rm -f "$tmp_env"' EXIT
  chmod 0600 "$tmp_env"
  printf "SLMFLEET_COORDINATOR=%s\nSLMFLEET_TOKEN=%s\nSLMFLEET_COORDINATOR_KEY='%s'\n" \
    "$coordinator" "$token" "$key" >"$tmp_env"
  mv -f "$tmp_env" "$ENV_FILE"
  trap - EXIT
  echo "wrote $ENV_FILE"
elif [ -f "$ENV_FILE" ]; then
  chmod 0600 "$ENV_FILE"
  echo "keeping $ENV_FILE"
fi

# --- systemd unit ----------------------------------------------------------------------------

install -m 0644 "$script_dir/$UNIT_NAME" "$UNIT_PATH"
systemctl daemon-reload
systemctl enable "$UNIT_NAME" >/dev/null

node_name=$(hostname)
if [ "$node_name" = raspberrypi ]; then
  echo "warning: the hostname is the default 'raspberrypi'; the agent uses it as its node name," >&2
  echo "         and nodes with the same name replace each other. Set a unique one first:" >&2
  echo "         hostnamectl set-hostname pi5-01" >&2
fi
if [ -f "$ENV_FILE" ]; then
  systemctl restart "$UNIT_NAME"
  echo "started $UNIT_NAME as node '$node_name'; follow it with: journalctl -u $UNIT_NAME -f"
else
  echo "installed and enabled $UNIT_NAME, but not started: $ENV_FILE is missing."
  echo "run again with --coordinator HOST:PORT --token TOKEN"
fi
