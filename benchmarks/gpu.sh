#!/usr/bin/env bash
# One GPU check for lora_nb (benchmarks/GPU.md): LoRA/QLoRA throughput + memory, lora_nb end to end on CUDA.
# Usage, from anywhere: bash benchmarks/gpu.sh [benchmarks/gpu.py options, e.g. --cases 1-5 | --cpu-smoke]
# Writes gpu.log, gpu.json, gpu.md to $OUT when set (the device tool), else to benchmarks/.
# Wheels in .whl/ (when present) are installed into /tmp/site and put first on PYTHONPATH.
set -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export PYTHONUNBUFFERED=1
DEST="${OUT:-$PWD/benchmarks}"
mkdir -p "$DEST"
PY="${PYTHON:-python3}"
{
  echo "== $(date -u +%FT%TZ) $(uname -m) $($PY --version 2>&1) ($(command -v $PY)) in $PWD"
  command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "== installing $(ls .whl/*.whl | wc -l) wheels from .whl into /tmp/site"
    t0=$SECONDS
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
    echo "== wheels installed in $((SECONDS - t0))s"
  else
    echo "== no .whl folder: using $PY's own packages"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  $PY benchmarks/gpu.py --out "$DEST" "$@"
} 2>&1 | tee "$DEST/gpu.log"
