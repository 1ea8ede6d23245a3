#!/usr/bin/env bash
# Trains on one GPU machine with all its GPUs: one process sees every local GPU and the
# ("data",) mesh spans them; the global batch is split evenly over the GPUs.
#
# Usage (from anywhere; extra arguments are passed to adc_jax.main, e.g. config overrides):
#   launch/gpu_node.sh
#   CONFIG=configs/cac.py WORKDIR=/scratch/runs/cac launch/gpu_node.sh --config.train.batch_size=64
#   GPUS=0,1 launch/gpu_node.sh                     # only GPUs 0 and 1
#
# Variables (environment; all optional):
#   CONFIG        config file[:size]                 (default <repo>/configs/late_sdd.py)
#   WORKDIR       checkpoints, metrics, evals; rerun with the same WORKDIR to resume
#                                                    (default <repo>/workdirs/<config name>)
#   DATA_DIR      dataset cache, sets --config.data.data_dir
#                                                    (default $ADC_JAX_DATA_DIR or ~/.cache/adc_jax/datasets)
#   GPUS          comma-separated GPU ids to use, sets CUDA_VISIBLE_DEVICES (default: all)
#   MEM_FRACTION  share of each GPU's memory JAX preallocates, XLA_PYTHON_CLIENT_MEM_FRACTION
#                 (JAX's default is 0.75; default here 0.9, the data pipeline lives on the host)
#   PYTHON        interpreter with adc_jax and jax[cuda] installed (default python)
#
# train.batch_size must divide by the number of GPUs (the config check says so before anything
# is built). Stopping with Ctrl-C or SIGTERM saves a checkpoint first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${CONFIG:-${ROOT}/configs/late_sdd.py}"
config_name="$(basename "${CONFIG%%:*}" .py)"
WORKDIR="${WORKDIR:-${ROOT}/workdirs/${config_name}}"
PYTHON="${PYTHON:-python}"

export XLA_PYTHON_CLIENT_MEM_FRACTION="${MEM_FRACTION:-0.9}"
if [[ -n "${GPUS:-}" ]]; then
  export CUDA_VISIBLE_DEVICES="${GPUS}"
fi
# adc_jax importable from this checkout even when it is not pip-installed.
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

args=(--config="${CONFIG}" --workdir="${WORKDIR}")
if [[ -n "${DATA_DIR:-}" ]]; then
  args+=(--config.data.data_dir="${DATA_DIR}")
fi

# --nomultiprocess: a single process, even inside a SLURM allocation that has several tasks.
exec "${PYTHON}" -m adc_jax.main --nomultiprocess "${args[@]}" "$@"
