#!/usr/bin/env bash
# GPU check of training (run on a machine with CUDA; about 1-2 minutes on one modern GPU):
# one epoch of SST-2 with mixed precision and cuDNN LSTM, then the same epoch without AMP.
# Prints device, epoch time and dev accuracy for each; writes nothing outside /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
export SENTIMENT_DATA_MIRROR="${SENTIMENT_DATA_MIRROR:-$(cd .. && pwd)/shared/data}"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| cuDNN", torch.backends.cudnn.version())
PY
for amp in amp no-amp; do
  out=$(mktemp -d)
  python -m training --dataset sst2 --device cuda --epochs 1 --batch-size 128 --"$amp" --no-progress \
    --out "$out" --run-name gpu 2>&1 | grep -E "epoch 1|dev |test |artifact"
  python - "$out/gpu/meta.json" "$amp" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
h = m["history"][0]
print(f"[{sys.argv[2]}] epoch seconds {h['seconds']:.1f} | train {m['training_seconds']:.1f} s total | "
      f"dev acc {m['metrics']['dev']['accuracy']:.4f} | device {m['device']}")
PY
done
