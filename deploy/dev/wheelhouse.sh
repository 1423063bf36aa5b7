#!/usr/bin/env bash
# Build the llama-cpp-python wheel once into $WHEELHOUSE; later runs find it and skip.
# GGML_NATIVE=OFF gives a portable x86-64/arm64 build (AVX2/FMA on x86, NEON on arm64)
# that the worker container image can reuse on the same architecture.
set -euo pipefail

: "${WHEELHOUSE:?set WHEELHOUSE}"
PYTHON="${PYTHON:-python3}"
version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
: "${version:?llama-cpp-python must be pinned with == in pyproject.toml}"
arch=$(uname -m)

mkdir -p "$WHEELHOUSE"
if ls "$WHEELHOUSE"/llama_cpp_python-"$version"-*"$arch".whl >/dev/null 2>&1; then
  exit 0
fi
echo "building llama-cpp-python $version into $WHEELHOUSE (once; several minutes on 2 cores)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PYTHON" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==$version"
mv "$tmp"/llama_cpp_python-*.whl "$WHEELHOUSE"/
