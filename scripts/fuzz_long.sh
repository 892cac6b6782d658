#!/usr/bin/env bash
# Longer, randomized schema fuzzing than CI's (tests/test_fuzz_api.py): a fresh random seed per run.
#   scripts/fuzz_long.sh [EXAMPLES_PER_OPERATION_AND_MODE]   (default 5000, about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_EXAMPLES="${1:-5000}" FUZZ_RANDOM=1 FUZZ_MIN_REQUESTS=0 \
  exec python -m pytest tests/test_fuzz_api.py -q -s -p no:cacheprovider
