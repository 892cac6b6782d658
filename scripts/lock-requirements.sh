#!/usr/bin/env bash
# Regenerates requirements.lock, the exact, hash-checked set of packages the images install
# (`pip install --require-hashes -r requirements.lock`), from pyproject.toml: the project's
# dependencies ([project] dependencies, not the dev extra) and the build backend ([build-system]
# requires), for the image's platform (CPython 3.11, Linux x86_64, glibc).
#
#   scripts/lock-requirements.sh                                # newest versions pyproject.toml allows
#   TORCH_FIND_LINKS=/opt/wheels scripts/lock-requirements.sh   # torch's metadata from a local CPU wheel
#
# torch itself is left out of the lock (its dependencies are in it): the images install it at the
# version pinned in pyproject.toml from their own index (the CPU index for the API image, PyPI's CUDA
# build for deploy/gpu/Dockerfile). It is resolved here only to lock its dependencies, from the CPU
# build's metadata (the CUDA build's would add the nvidia-* wheels): from the PyTorch CPU index, or,
# where that is unreachable, from a folder holding the CPU wheel (TORCH_FIND_LINKS).
#
# Needs uv (https://docs.astral.sh/uv/, `pip install uv`, best in a virtualenv of its own; UV=path/to/uv).
# tests/test_deploy.py checks that the lock names every dependency in pyproject.toml.
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
"$UV" pip compile pyproject.toml "$build_requires" \
  --no-config --quiet --generate-hashes --no-annotate \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --index-url https://pypi.org/simple "${torch_source[@]}" \
  --no-emit-package torch \
  --custom-compile-command "scripts/lock-requirements.sh" \
  -o requirements.lock.new
{
  echo "# The API and GPU images install exactly these packages, hashes checked; regenerate with"
  echo "# scripts/lock-requirements.sh after changing dependencies in pyproject.toml. torch is not here: the"
  echo "# images install it at the version pinned in pyproject.toml from the PyTorch CPU index (API image) or"
  echo "# PyPI (GPU image), without hashes (the lock tool could not reach the CPU index). Its dependencies"
  echo "# are here, resolved from the CPU build's metadata."
  cat requirements.lock.new
} >requirements.lock
rm -f requirements.lock.new "$build_requires"
rmdir "$(dirname "$build_requires")"
grep -c '^[a-z]' requirements.lock | xargs echo "requirements.lock: packages:"
