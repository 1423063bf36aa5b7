#!/usr/bin/env bash
# Build the local base image slmfleet-base:<suite> (Debian minbase + python3, python3-venv,
# libgomp1, ca-certificates) with debootstrap + `docker import`, for machines that cannot
# pull from a registry. Skips everything if the image already exists. The trimmed rootfs
# tarball is cached under $SLMFLEET_CACHE/images/, keyed by suite, arch and package list,
# so re-importing after the engine was wiped does not debootstrap again.
#
#   bash deploy/docker/base-image.sh            # -> slmfleet-base:bookworm
#   SUITE=trixie BASE_TAG=slmfleet-base:trixie bash deploy/docker/base-image.sh
#
# Needs root (debootstrap) and a running Docker engine (see deploy/dev/docker-engine.sh).
set -euo pipefail

SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
BASE_TAG="${BASE_TAG:-slmfleet-base:$SUITE}"
PACKAGES="${PACKAGES:-python3,python3-venv,libgomp1,ca-certificates}"
CACHE_ROOT="${SLMFLEET_CACHE:-$HOME/.cache/slmfleet}/images"
# Bump when the trim steps below change, so an old cached rootfs is not reused.
RECIPE=1

die() {
  echo "base-image.sh: error: $*" >&2
  exit 1
}

if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  echo "base image $BASE_TAG already present"
  exit 0
fi

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
key=$(printf '%s\n' "$RECIPE" "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-12)
tarball="$CACHE_ROOT/rootfs-$SUITE-minbase-$arch-$key.tar.gz"

if [ ! -s "$tarball" ]; then
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root; run as root (or import a cached $tarball)"
  command -v debootstrap >/dev/null || die "debootstrap is missing; run: bash deploy/dev/docker-engine.sh"
  mkdir -p "$CACHE_ROOT"
  rootfs=$(mktemp -d /var/tmp/slmfleet-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
  echo "debootstrap $SUITE ($arch, minbase + $PACKAGES) into $rootfs (about a minute)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
    >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
  rm -f "$rootfs.log"

  echo "trimming the rootfs (apt lists and caches, docs, man pages, locales except C)"
  # Keep later `apt-get install`s (e.g. in a Dockerfile) from putting docs back, as
  # Debian's -slim images do; copyright files stay for license compliance.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slmfleet-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
  cat >"$rootfs/etc/apt/apt.conf.d/slmfleet-no-cache" <<'CFG'
APT::Install-Recommends "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
    ! -name 'C' ! -name 'C.*' -exec rm -rf {} +
  find "$rootfs/usr/lib/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + \
    2>/dev/null || true
  # a fresh machine-id is made by whoever needs one; the container runtime owns /dev etc.
  : >"$rootfs/etc/machine-id"

  echo "caching the rootfs as $tarball"
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -C "$rootfs" -c . | gzip -1 >"$tarball.partial"
  mv "$tarball.partial" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
else
  echo "reusing cached rootfs $tarball"
fi

echo "importing $tarball as $BASE_TAG"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
  "$tarball" "$BASE_TAG" >/dev/null
echo "base image $BASE_TAG ready ($(docker image inspect --format '{{.Size}}' "$BASE_TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
