#!/usr/bin/env bash
# GPU check for adc_jax: GPU-vs-CPU loss on one batch, then the paper-scale step benchmark
# (float32 and bfloat16, global batch 32 and 128). Needs jax with a GPU backend, flax, optax,
# orbax-checkpoint, numpy and ml-collections; nothing else. Finishes in a few minutes.
#
#   bash tools/gpu_check.sh            # the check
#   bash tools/gpu_check.sh --extra    # plus bfloat16 at batch 256 and a time breakdown
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# Leave GPU memory to XLA's allocator but do not grab all of it up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 tools/gpu_check.py "$@"
