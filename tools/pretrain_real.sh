#!/usr/bin/env bash
# BYOL-A pretraining on your recordings, scored two ways: the linear probe on the recordings
# held out of pretraining, and late SDD fine-tuned from the encoder against random init.
#
#   tools/pretrain_real.sh AUDIO_DIR ROOT
#   EVENTS=rooster,cow BACKGROUNDS=sea_waves,engine SIZE=smoke STEPS=4 tools/pretrain_real.sh A R
#
# AUDIO_DIR: an ESC-50 copy, or one sub-folder per class (the layouts `clip_pairs` reads).
# ROOT: where everything goes; rerunning resumes (finished runs are kept, not redone).
#   1. ROOT/pretrain/seed<S>: `python -m adc_jax.pretrain` on AUDIO_DIR as an audio_folder with
#      data.exclude_held_out=true, so the recordings clip_pairs evaluates on and the probe tests
#      on are never heard; one run per seed of PRETRAIN_SEEDS.
#   2. ROOT/probe.json: `tools/linear_probe.py` on AUDIO_DIR's held-out split, the pretrained
#      encoders (one row, their mean) against random init over PROBE_SEEDS (Welch's test).
#   3. ROOT/random_init, ROOT/pretrained: `tools/ablation.py` grids of late SDD on clip_pairs of
#      AUDIO_DIR (EVENTS over BACKGROUNDS), seeds FINETUNE_SEEDS, from random init and from
#      ROOT/pretrain/seed<first of PRETRAIN_SEEDS>/encoder.
#   4. ROOT/paired.md, ROOT/paired.json: `tools/compare_ablations.py`, seed s against seed s.
# Settings (environment): SIZE (quick), PRETRAIN_SEEDS ("0 1 2"), FINETUNE_SEEDS (0,1,2,3),
# PROBE_SEEDS (random-init seeds of the probe: 0,...,9; a random row costs seconds),
# EVENTS and BACKGROUNDS (clip_pairs' classes; the defaults are results/byola_real_quick's),
# STEPS (captioner steps; "" = the size's), PRETRAIN_STEPS ("" = the size's).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
AUDIO_DIR=$1
ROOT=$2
SIZE=${SIZE:-quick}
PRETRAIN_SEEDS=${PRETRAIN_SEEDS:-"0 1 2"}
FINETUNE_SEEDS=${FINETUNE_SEEDS:-0,1,2,3}
PROBE_SEEDS=${PROBE_SEEDS:-0,1,2,3,4,5,6,7,8,9}
EVENTS=${EVENTS:-rooster,cow,crying_baby,door_wood_knock,glass_breaking,clock_alarm}
BACKGROUNDS=${BACKGROUNDS:-sea_waves,engine}
STEPS=${STEPS:-}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."

if [[ ! -d "$AUDIO_DIR" ]]; then
  echo "Error: AUDIO_DIR=$AUDIO_DIR is not a directory (an ESC-50 copy or one folder per class)." >&2
  exit 2
fi

encoders=()
for seed in $PRETRAIN_SEEDS; do
  workdir="$ROOT/pretrain/seed$seed"
  args=(--config="configs/byola_pretrain.py:$SIZE" --workdir="$workdir"
        --config.data.name=audio_folder --config.data.audio_dir="$AUDIO_DIR"
        --config.data.exclude_held_out=true --config.seed="$seed")
  [[ -n "$PRETRAIN_STEPS" ]] && args+=(--config.train.num_steps="$PRETRAIN_STEPS")
  echo "== pretraining, seed $seed: $workdir"
  "$PYTHON" -m adc_jax.pretrain "${args[@]}"
  encoders+=("$workdir/encoder")
done

echo "== linear probe on the held-out recordings of $AUDIO_DIR"
"$PYTHON" tools/linear_probe.py --encoder="$(IFS=,; echo "${encoders[*]}")" \
  --data_dir="$AUDIO_DIR" --seeds="$PROBE_SEEDS" --json_out="$ROOT/probe.json"

grid=(--size="$SIZE" --experiments=late_sdd --lambdas= --seeds="$FINETUNE_SEEDS"
      --override=config.data.name=clip_pairs
      --override=config.data.clips_dir="$AUDIO_DIR"
      --override=config.data.background_dir="$AUDIO_DIR"
      --override=config.data.clip_classes="$EVENTS"
      --override=config.data.background_classes="$BACKGROUNDS")
[[ -n "$STEPS" ]] && grid+=(--steps="$STEPS")
echo "== late SDD from random init: $ROOT/random_init"
"$PYTHON" tools/ablation.py "${grid[@]}" --workdir_root="$ROOT/random_init"
echo "== late SDD from ${encoders[0]}: $ROOT/pretrained"
"$PYTHON" tools/ablation.py "${grid[@]}" --workdir_root="$ROOT/pretrained" \
  --byola_init="${encoders[0]}"

echo "== seed-paired comparison: $ROOT/paired.md"
"$PYTHON" tools/compare_ablations.py "$ROOT/random_init" "$ROOT/pretrained" \
  --name_a="random init" --name_b=pretrained --json_out="$ROOT/paired.json" | tee "$ROOT/paired.md"
