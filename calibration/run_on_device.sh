#!/usr/bin/env bash
# Calibrate on a GPU machine that has only torch, numpy, pandas and pyyaml (no install needed):
# time each model's kernels there and leave raw timings under $OUT; fit them back here with
#   servesim calibrate --from-raw <fetched folder>/<model> -o profiles/<gpu>/
#
# usage: calibration/run_on_device.sh [--quick] MODEL [MODEL ...]   (default: llama-3-8b sdxl)
# A run cut off by a time limit resumes when re-run with the same $OUT: finished ops are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
quick=()
if [[ "${1:-}" == "--quick" ]]; then quick=(--quick); shift; fi
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(llama-3-8b sdxl)
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv || true; } > "$OUT/nvidia-smi.csv"
python3 -c "import torch, numpy, pandas, yaml; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee "$OUT/env.txt"
for m in "${models[@]}"; do
  echo "== $m"
  python3 -m calibration.measure --model "$m" --device cuda "${quick[@]}" -o "$OUT/$m" 2>&1 | tee -a "$OUT/$m.log"
done
