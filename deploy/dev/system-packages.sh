#!/usr/bin/env bash
# Debian packages the build and the test suite need (compilers for llama-cpp-python,
# Chromium for the status page tests); installs only what is missing.
# Run as root (CI and the dev machine are root); prints what it would need otherwise.
set -euo pipefail

needed=()
command -v cmake >/dev/null || needed+=(cmake)
command -v g++ >/dev/null || needed+=(g++)
command -v make >/dev/null || needed+=(make)
command -v git >/dev/null || needed+=(git)
python3 -c "import venv, ensurepip" 2>/dev/null || needed+=(python3-venv)
command -v chromium >/dev/null || needed+=(chromium)  # the status page's browser tests
command -v ip >/dev/null || needed+=(iproute2)  # network namespaces: multi-host tests
command -v tc >/dev/null || needed+=(iproute2)

if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${needed[*]}; run: sudo apt-get install ${needed[*]}" >&2
  exit 1
fi
echo "installing system packages: ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${needed[@]}"
