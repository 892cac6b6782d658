#!/usr/bin/env bash
# Regenerates the exact, hash-checked sets of packages the images install
# (`pip install --require-hashes -r <lock>`) from pyproject.toml, for the images' platform (CPython
# 3.11, Linux x86_64, glibc), each with the build backend ([build-system] requires):
#   requirements.lock        the API image (Dockerfile): [project] dependencies only, what serving imports
#   requirements-train.lock  the training image (deploy/gpu/Dockerfile): those plus the `train` extra
# Versions already pinned are kept (uv prefers them) unless UPGRADE=1.
#
#   scripts/lock-requirements.sh                                # resolve against PyPI and the CPU index
#   TORCH_FIND_LINKS=/opt/wheels scripts/lock-requirements.sh   # torch's metadata from a local CPU wheel
#
# torch itself is left out of the locks (its dependencies are in them): the images install it at the
# version pinned in pyproject.toml from their own index (the CPU index for the API image, PyPI's CUDA
# build for deploy/gpu/Dockerfile). It is resolved here only to lock its dependencies, from the CPU
# build's metadata (the CUDA build's would add the nvidia-* wheels): from the PyTorch CPU index, or,
# where that is unreachable, from a folder holding the CPU wheel (TORCH_FIND_LINKS).
#
# Needs uv (https://docs.astral.sh/uv/, `pip install uv`, best in a virtualenv of its own; UV=path/to/uv).
# tests/test_deploy.py checks that the locks name every dependency in pyproject.toml and agree.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
command -v "$UV" >/dev/null || { echo "uv not found; pip install uv (or set UV=/path/to/uv)" >&2; exit 2; }
if [ -n "${TORCH_FIND_LINKS:-}" ]; then
  torch_source=(--find-links "$TORCH_FIND_LINKS")
else
  torch_source=(--torch-backend cpu)
fi
build_requires="$(mktemp -d)/build-system-requires.txt"
python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" \
  >"$build_requires"
lock() {  # lock OUTPUT IMAGE [uv pip compile options...]
  local out=$1 image=$2; shift 2
  # Seeded with the current pins (its own lock, else the serving one), which uv keeps where they fit.
  rm -f "$out.new"
  if [ "${UPGRADE:-0}" != 1 ]; then
    for seed in "$out" requirements.lock; do [ -f "$seed" ] && { cp "$seed" "$out.new"; break; }; done
  fi
  "$UV" pip compile pyproject.toml "$build_requires" "$@" \
    --no-config --quiet --generate-hashes --no-annotate \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --index-url https://pypi.org/simple "${torch_source[@]}" \
    --no-emit-package torch \
    --custom-compile-command "scripts/lock-requirements.sh" \
    -o "$out.new"
  {
    echo "# The $image installs exactly these packages, hashes checked; regenerate with"
    echo "# scripts/lock-requirements.sh after changing dependencies in pyproject.toml. torch is not here: the"
    echo "# images install it at the version pinned in pyproject.toml from the PyTorch CPU index (API image) or"
    echo "# PyPI (GPU image), without hashes (the lock tool could not reach the CPU index). Its dependencies"
    echo "# are here, resolved from the CPU build's metadata."
    cat "$out.new"
  } >"$out"
  rm -f "$out.new"
  grep -c '^[a-z]' "$out" | xargs echo "$out: packages:"
}
# The training lock first: on its first run it is seeded with the serving lock's pins of training packages.
lock requirements-train.lock "training image (deploy/gpu/Dockerfile)" --extra train
lock requirements.lock "API image"
rm -f "$build_requires"
rmdir "$(dirname "$build_requires")"
