#!/usr/bin/env bash
# Cloud TPU VM (a single host or a pod slice): copies this checkout to every worker, installs it,
# and runs the same training command on all workers at once. One process per worker drives that
# worker's TPU chips; jax.distributed.initialize() finds the other workers by itself (from the
# TPU VM metadata server), and the ("data",) mesh spans every chip of the slice.
#
# Usage (run on your own machine, with gcloud authenticated; extra arguments go to adc_jax.main):
#   TPU_NAME=adc-v4-32 ZONE=us-central2-b launch/tpu_pod.sh install
#   TPU_NAME=adc-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/late_sdd \
#       launch/tpu_pod.sh train --config.train.batch_size=256
#   DETACH=1 ... launch/tpu_pod.sh train     # keep training after this terminal closes
#   TPU_NAME=... ZONE=... launch/tpu_pod.sh logs   # last lines of each worker's log (DETACH=1)
#
# Variables (environment):
#   TPU_NAME   name of the TPU VM / pod slice                           (required)
#   ZONE       its zone                                                  (required)
#   PROJECT    Google Cloud project               (default: gcloud's configured project)
#   WORKDIR    run directory, required for `train`. On a pod it must be a path every worker
#              sees (a Filestore/NFS mount or a gcsfuse mount of a bucket): Orbax writes one
#              checkpoint from all workers into it. Plain gs:// URLs are not supported (the
#              checkpointer resolves the path with os.path). Rerun with it to resume.
#   CONFIG     config file[:size], relative to the repository root   (default configs/late_sdd.py)
#   DATA_DIR   dataset cache on each worker, sets --config.data.data_dir (default
#              ~/.cache/adc_jax/datasets: each worker builds/reads its own copy; a shared
#              directory also works, the synthetic builder takes a lock while it builds)
#   REMOTE_DIR where the code goes on each worker                       (default adc_jax)
#   VENV       virtual environment on each worker                       (default adc_venv)
#   DETACH     1: start training under nohup, logging to ~/adc_train.log on each worker (its
#              pid in ~/adc_train.pid; `kill -TERM` it on every worker to checkpoint and stop)
#
# `install` copies the working tree (tracked and untracked files that git does not ignore),
# creates the virtual environment with jax[tpu] and adc_jax, and installs a Java runtime for the
# METEOR scorer. Run it again after changing the code; `train` uses what was installed last.
set -euo pipefail

usage="Usage: TPU_NAME=... ZONE=... $0 install | train [--config.x=y ...] | logs"
case "${1:-}" in
  install | train | logs) ;;
  *) echo "${usage}" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
CONFIG="${CONFIG:-configs/late_sdd.py}"
REMOTE_DIR="${REMOTE_DIR:-adc_jax}"
VENV="${VENV:-adc_venv}"

gcloud_args=(--zone="${ZONE}")
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_args+=(--project="${PROJECT}")
fi

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" "${gcloud_args[@]}" --worker=all --command="$1"
}

install() {
  local archive
  archive="$(mktemp --suffix=.tar.gz)"
  # shellcheck disable=SC2064
  trap "rm -f '${archive}'" EXIT
  (cd "${ROOT}" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 tar czf "${archive}" --ignore-failed-read --)  # skips files deleted but tracked
  gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:/tmp/adc_jax.tar.gz" \
    "${gcloud_args[@]}" --worker=all
  on_all_workers "set -euo pipefail
    rm -rf ~/${REMOTE_DIR} && mkdir -p ~/${REMOTE_DIR}
    tar xzf /tmp/adc_jax.tar.gz -C ~/${REMOTE_DIR}
    sudo apt-get -qq update && sudo apt-get -qq install -y default-jre-headless python3-venv
    [[ -d ~/${VENV} ]] || python3 -m venv ~/${VENV}
    ~/${VENV}/bin/pip install -q -U pip
    ~/${VENV}/bin/pip install -q -U 'jax[tpu]' -e ~/${REMOTE_DIR}
    ~/${VENV}/bin/python -c 'import adc_jax, jax; print(\"adc_jax ready, jax\", jax.__version__)'"
}

train() {
  : "${WORKDIR:?set WORKDIR to a directory every worker sees (see the header)}"
  local args=(--multiprocess --config="${CONFIG}" --workdir="${WORKDIR}")
  if [[ -n "${DATA_DIR:-}" ]]; then
    args+=(--config.data.data_dir="${DATA_DIR}")
  fi
  args+=("$@")
  # --multiprocess: Cloud TPU VMs do not export the worker list, so adc_jax.main cannot tell a
  # pod from a single host by its environment; jax.distributed.initialize() then asks the
  # metadata server for the workers (it also works on a single-host TPU VM).
  local quoted python
  printf -v quoted ' %q' "${args[@]}"  # quoted for the remote shell
  # shellcheck disable=SC2088  # the remote shell expands ~
  python="~/${VENV}/bin/python -m adc_jax.main${quoted}"
  if [[ "${DETACH:-0}" == 1 ]]; then
    on_all_workers "cd ~/${REMOTE_DIR} || exit 1
      nohup ${python} > ~/adc_train.log 2>&1 < /dev/null &
      echo \$! > ~/adc_train.pid
      echo \"\$(hostname): started (pid \$(cat ~/adc_train.pid)), log in ~/adc_train.log\""
  else
    on_all_workers "cd ~/${REMOTE_DIR} && ${python}"
  fi
}

logs() {
  # shellcheck disable=SC2016  # expanded on each worker
  on_all_workers 'echo "== $(hostname)"; tail -n 20 ~/adc_train.log'
}

case "${1:-}" in
  install) install ;;
  train) shift; train "$@" ;;
  logs) logs ;;
esac
