#!/usr/bin/env bash
# Roofline and throughput of candidate evaluation on one device, in under 5 minutes.
#
#   benchmarks/gpu_check.sh                 # the first CUDA device
#   benchmarks/gpu_check.sh --device cpu    # the same checks on the CPU (how it is tested here)
#
# Writes roofline_<device>.jsonl and throughput_<device>.jsonl into $RESULTS_DIR (default
# benchmarks/results; one JSON line per measurement, exact configuration inside) and prints the
# roofline table. $PYTHON picks the interpreter (default: the project's .venv); $MODELS the
# roofline's table models (default: all six).
set -euo pipefail
device="cuda"
if [[ "${1:-}" == "--device" ]]; then device="${2:?--device needs a value: cuda or cpu}"; fi
if [[ "$device" != "cuda" && "$device" != "cpu" ]]; then
  echo "--device must be cuda or cpu, got '$device'" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
out="${RESULTS_DIR:-$here/results}"
mkdir -p "$out"
"$python" -c "import torch, sys; sys.exit(0 if '$device' == 'cpu' or torch.cuda.is_available() else 3)" \
  || { echo "no CUDA device visible to $python" >&2; exit 3; }
batch=128
[[ "$device" == "cuda" ]] && batch=512
models="${MODELS:-snn_mnist,int8_mnist,argmax_fmnist,staircase_mnist,moe_20,mlp_mnist}"
timeout 180 "$python" "$here/roofline.py" --device "$device" --batch "$batch" --threads 1 \
  --min-time 0.5 --models "$models" | tee "$out/roofline_$device.jsonl"
timeout 100 "$python" "$here/throughput.py" --device "$device" --batch "$batch" \
  --evaluators layered --min-time 0.5 | tee "$out/throughput_$device.jsonl"
"$python" "$here/roofline.py" --report "$out/roofline_$device.jsonl"
