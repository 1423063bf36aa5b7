#!/usr/bin/env bash
# Build the slmfleet container images: slmfleet-worker, slmfleet-agent and
# slmfleet-coordinator, each tagged :<version from pyproject.toml> and :latest.
#
#   bash deploy/docker/build-images.sh                  (or: make images)
#   IMAGES="worker agent" bash deploy/docker/build-images.sh
#
# Environment:
#   BASE_IMAGE    base of every image (default: slmfleet-base:bookworm, built locally by
#                 base-image.sh; with registry access e.g. debian:bookworm-slim)
#   WHEELHOUSE    prebuilt llama-cpp-python wheel (default ~/.cache/slmfleet/wheelhouse)
#   IMAGES        which images to build (default: worker agent coordinator)
#   PYTHON        makes the wheels on the host (default: .venv/bin/python, else python3)
#   EXTRAS        slmfleet extras for the coordinator, e.g. embeddings (default: none)
#   PIP_NO_INDEX  1: pip in the build installs only from the staged wheels; 0: it may
#                 also use the index (default: 1, and the build runs with --network
#                 none, when the staged wheels fit the base image's Python; else 0)
#   KEEP_CONTEXT  stage the build contexts into this directory and keep them (e.g. for a
#                 multi-arch buildx build, see Dockerfile.worker)
#   STAGE_ONLY=1  with KEEP_CONTEXT: only stage the contexts, build nothing
#   VERBOSE=1     stream docker build output (default: shown only when a build fails)
#   DOCKER_BUILD_FLAGS  extra `docker build` flags, e.g. --no-cache
#
# The wheels are made on the host: slmfleet's own (pip wheel --no-deps) every run, and
# its dependencies once per dependency set into
# ${SLMFLEET_CACHE:-~/.cache/slmfleet}/image-wheels/<hash>/ (PyPI on the first run; later
# runs are offline). Docker gets a small staged context (wheels + Dockerfile), never the
# checkout.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
cd "$repo_root"

CACHE="${SLMFLEET_CACHE:-$HOME/.cache/slmfleet}"
WHEELHOUSE="${WHEELHOUSE:-$HOME/.cache/slmfleet/wheelhouse}"
IMAGES="${IMAGES:-worker agent coordinator}"
EXTRAS="${EXTRAS:-}"
VERBOSE="${VERBOSE:-0}"
STAGE_ONLY="${STAGE_ONLY:-0}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

die() {
  echo "build-images.sh: error: $*" >&2
  exit 1
}

now() { date +%s; }
started=$(now)

for image in $IMAGES; do
  case "$image" in
    worker | agent | coordinator) ;;
    *) die "IMAGES: unknown image '$image'; use any of: worker agent coordinator" ;;
  esac
done
if [ "$STAGE_ONLY" = 1 ]; then
  [ -n "${KEEP_CONTEXT:-}" ] || die "STAGE_ONLY=1 needs KEEP_CONTEXT=DIR (where to stage)"
else
  command -v docker >/dev/null || die "no docker client; run: make docker-engine"
  timeout 20 docker info >/dev/null 2>&1 \
    || die "the Docker engine does not answer; run: make docker-engine"
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 \
  || die "$PYTHON has no pip; set PYTHON to a Python >= 3.11 with pip (e.g. make setup)"

# --- what pyproject.toml pins ------------------------------------------------------------
# version, the pins the worker image needs, the source URL, and the requirement files
# (runtime dependencies; one file per extra) written into $meta_dir.
meta_dir=$(mktemp -d "${TMPDIR:-/tmp}/slmfleet-meta.XXXXXX")
trap 'rm -rf "$meta_dir"' EXIT
version="" llama_version="" pyzmq_version="" source_url="" py_tag=""
assignments=$("$PYTHON" - "$meta_dir" <<'PY'
import pathlib, re, shlex, subprocess, sys, tomllib

out = pathlib.Path(sys.argv[1])
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
deps = project["dependencies"]
(out / "extras").mkdir()
(out / "requirements.txt").write_text("\n".join(deps) + "\n")
for extra, reqs in project.get("optional-dependencies", {}).items():
    (out / "extras" / f"{extra}.txt").write_text("\n".join(reqs) + "\n")

def pin(name: str) -> str:
    for req in deps:
        m = re.fullmatch(rf"{re.escape(name)}\s*==\s*([^\s;]+)", req, re.IGNORECASE)
        if m:
            return m.group(1)
    sys.exit(f"pyproject.toml: {name} must be pinned with == for the worker image")

urls = {k.lower(): v for k, v in project.get("urls", {}).items()}
source = urls.get("source") or urls.get("repository") or urls.get("homepage") or ""
if not source:
    git = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True,
                         text=True)
    source = git.stdout.strip() if git.returncode == 0 else "unknown"
values = {
    "version": project["version"],
    "llama_version": pin("llama-cpp-python"),
    "pyzmq_version": pin("pyzmq"),
    "source_url": source,
    "py_tag": "%d.%d" % sys.version_info[:2],
}
for key, value in values.items():
    print(f"{key}={shlex.quote(value)}")
PY
) || die "could not read pyproject.toml with $PYTHON (needs Python >= 3.11)"
eval "$assignments"
arch=$(uname -m)
echo "slmfleet $version: images [$IMAGES] for $arch, wheels made with $PYTHON (Python $py_tag)"

# --- base image --------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=slmfleet-base:bookworm
  [ "$STAGE_ONLY" = 1 ] || bash "$script_dir/base-image.sh"
fi

# --- dependency wheels (cached per dependency set) ---------------------------------------
extra_files=()
for extra in $(echo "$EXTRAS" | tr ',' ' '); do
  [ -f "$meta_dir/extras/$extra.txt" ] || die "EXTRAS: no extra '$extra' in pyproject.toml"
  extra_files+=("$meta_dir/extras/$extra.txt")
done
# keyed by what decides the wheel set: the pins (from pyproject.toml), the extras asked
# for, the Python version and the architecture
key=$(cat "$meta_dir/requirements.txt" "${extra_files[@]}" \
  | { cat; echo "extras=$EXTRAS python=$py_tag arch=$arch"; } | sha256sum | cut -c1-16)
deps_dir="$CACHE/image-wheels/$key"
if [ -f "$deps_dir/.complete" ]; then
  echo "dependency wheels: cached in $deps_dir"
else
  echo "dependency wheels: pip wheel into $deps_dir (once; a few minutes)"
  [ -n "$(ls "$WHEELHOUSE"/llama_cpp_python-*.whl 2>/dev/null)" ] \
    || echo "  (no llama_cpp_python wheel in $WHEELHOUSE: pip compiles it, several minutes)"
  mkdir -p "$CACHE/image-wheels"
  partial="$deps_dir.partial.$$"
  rm -rf "$partial"
  req_args=(-r "$meta_dir/requirements.txt")
  for f in "${extra_files[@]}"; do req_args+=(-r "$f"); done
  if ! "$PYTHON" -m pip wheel -q --find-links "$WHEELHOUSE" -w "$partial" "${req_args[@]}"; then
    rm -rf "$partial"
    die "pip wheel of the dependencies failed (see above)"
  fi
  touch "$partial/.complete"
  rm -rf "$deps_dir"
  mv "$partial" "$deps_dir"
fi

# --- slmfleet's own wheel ----------------------------------------------------------------
# Built from a copy of the sources (no build/ or egg-info left in the checkout), with
# fixed zip timestamps so that unchanged code gives a byte-identical wheel and docker
# reuses its cached layers.
if [ -n "${KEEP_CONTEXT:-}" ]; then
  ctx_root=$KEEP_CONTEXT
  if [ -d "$ctx_root" ] && [ -n "$(ls -A "$ctx_root")" ] \
    && [ ! -f "$ctx_root/.slmfleet-context" ]; then
    die "KEEP_CONTEXT=$ctx_root is a non-empty directory this script did not make"
  fi
  rm -rf "$ctx_root"
  mkdir -p "$ctx_root"
  touch "$ctx_root/.slmfleet-context"
else
  ctx_root=$(mktemp -d "${TMPDIR:-/tmp}/slmfleet-images.XXXXXX")
  trap 'rm -rf "$meta_dir" "$ctx_root"' EXIT
fi
src="$ctx_root/.src"
mkdir -p "$src" "$ctx_root/app"
tar --exclude=__pycache__ --exclude='*.pyc' -c pyproject.toml README.md topology node_agent \
  coordinator | tar -x -C "$src"
isolation=()
# setuptools 70.1+ builds wheels by itself: with it installed, no build env from PyPI
if "$PYTHON" -c "import setuptools.command.bdist_wheel" 2>/dev/null; then
  isolation=(--no-build-isolation)
fi
SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel -q --no-deps "${isolation[@]}" \
  -w "$ctx_root/app" "$src" >"$ctx_root/wheel.log" 2>&1 \
  || { cat "$ctx_root/wheel.log" >&2; die "pip wheel of slmfleet failed"; }
rm -rf "$src" "$ctx_root/wheel.log"
app_wheel=$(ls "$ctx_root"/app/slmfleet-*.whl)
echo "slmfleet wheel: $(basename "$app_wheel")"

# --- stage the contexts ------------------------------------------------------------------
link_or_copy() {  # hard links when the cache and the context share a file system
  cp -l "$@" 2>/dev/null || cp "$@"
}
wants() { case " $IMAGES " in *" $1 "*) return 0 ;; esac; return 1; }

if wants worker; then
  # only the worker's closure: pyzmq and llama-cpp-python with their dependencies
  mkdir -p "$ctx_root/worker/app" "$ctx_root/worker/wheels"
  "$PYTHON" -m pip wheel -q --no-index --find-links "$deps_dir" -w "$ctx_root/worker/wheels" \
    "pyzmq==$pyzmq_version" "llama-cpp-python==$llama_version" \
    || die "the cached wheels in $deps_dir lack the worker's; delete that directory and rerun"
  link_or_copy "$app_wheel" "$ctx_root/worker/app/"
  cp "$script_dir/Dockerfile.worker" "$ctx_root/worker/Dockerfile"
fi
if wants agent || wants coordinator; then
  mkdir -p "$ctx_root/full/app" "$ctx_root/full/wheels/extras"
  link_or_copy "$deps_dir"/*.whl "$ctx_root/full/wheels/"
  cp "$meta_dir/requirements.txt" "$ctx_root/full/wheels/"
  cp "$meta_dir"/extras/*.txt "$ctx_root/full/wheels/extras/" 2>/dev/null || true
  link_or_copy "$app_wheel" "$ctx_root/full/app/"
  cp "$script_dir/Dockerfile.agent" "$script_dir/Dockerfile.coordinator" "$ctx_root/full/"
fi
rm -rf "$ctx_root/app"
if [ "$STAGE_ONLY" = 1 ]; then
  echo "build contexts staged in $ctx_root (worker/, full/); nothing built (STAGE_ONLY=1)"
  exit 0
fi

# --- install offline? --------------------------------------------------------------------
# The staged wheels fit the image only if they were made for the base image's Python.
base_py=$(docker run --rm --entrypoint /bin/sh "$BASE_IMAGE" -c \
  'python3 -c "import sys; print(\"%d.%d\" % sys.version_info[:2])" 2>/dev/null' || true)
network=()
if [ -z "${PIP_NO_INDEX:-}" ]; then
  if [ "$base_py" = "$py_tag" ]; then
    PIP_NO_INDEX=1
    network=(--network none)  # proof that the build needs nothing from the network
  else
    PIP_NO_INDEX=0
    echo "note: $BASE_IMAGE has Python '${base_py:-none}', the wheels are for $py_tag:" \
      "pip in the build may download (PIP_NO_INDEX=0)"
  fi
fi

# --- build -------------------------------------------------------------------------------
# BuildKit when the buildx plugin is there, else the legacy builder.
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
  if docker buildx version >/dev/null 2>&1; then DOCKER_BUILDKIT=1; else DOCKER_BUILDKIT=0; fi
fi
export DOCKER_BUILDKIT

build() {  # build COMPONENT CONTEXT DOCKERFILE [extra docker build args...]
  local component=$1 context=$2 dockerfile=$3 t0 log
  shift 3
  t0=$(now)
  log="$ctx_root/build-$component.log"
  echo "building slmfleet-$component:$version (base $BASE_IMAGE, PIP_NO_INDEX=$PIP_NO_INDEX)"
  local args=(
    -f "$context/$dockerfile"
    -t "slmfleet-$component:$version" -t "slmfleet-$component:latest"
    --build-arg "BASE_IMAGE=$BASE_IMAGE"
    --build-arg "PIP_NO_INDEX=$PIP_NO_INDEX"
    --build-arg "VERSION=$version"
    --build-arg "SOURCE_URL=$source_url"
    --build-arg "LLAMA_CPP_VERSION=$llama_version"
  )
  [ -z "${CMAKE_ARGS:-}" ] || args+=(--build-arg "CMAKE_ARGS=$CMAKE_ARGS")
  args+=("${network[@]}")
  # legacy builder: no stopped build containers left behind when a step fails
  [ "$DOCKER_BUILDKIT" = 1 ] || args+=(--force-rm)
  # shellcheck disable=SC2206  # word-split on purpose: a list of flags
  [ -z "${DOCKER_BUILD_FLAGS:-}" ] || args+=(${DOCKER_BUILD_FLAGS})
  if [ "$VERBOSE" = 1 ]; then
    docker build "${args[@]}" "$@" "$context" || die "docker build of slmfleet-$component failed"
  elif ! docker build "${args[@]}" "$@" "$context" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "docker build of slmfleet-$component failed (last lines above)"
  fi
  echo "  slmfleet-$component:$version and :latest in $(($(now) - t0))s"
}

if wants worker; then
  build worker "$ctx_root/worker" Dockerfile --build-arg "PYZMQ_VERSION=$pyzmq_version"
fi
if wants agent; then
  build agent "$ctx_root/full" Dockerfile.agent
fi
if wants coordinator; then
  build coordinator "$ctx_root/full" Dockerfile.coordinator --build-arg "EXTRAS=$EXTRAS"
fi

echo "done in $(($(now) - started))s:"
for image in $IMAGES; do
  docker image inspect --format '{{.Size}}' "slmfleet-$image:$version" \
    | awk -v name="slmfleet-$image:$version" '{printf "  %-34s %5.0f MB\n", name, $1 / 1e6}'
done
