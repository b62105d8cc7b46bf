#!/usr/bin/env bash
# Trains the built-in model `sst2-minilm-l6`: two teacher fine-tunes of all-MiniLM-L6-v2 on
# SST-2 train (different seeds), then one student distilled from their mean logits.
# Every stage is resumable: rerun this script after an interruption and it continues.
# Usage: scripts/train_builtin.sh [SST2_DIR] [WORK_DIR]
set -euo pipefail
data=${1:-../shared/data/sst2}
work=${2:-runs/builtin}
common=(--base-model all-MiniLM-L6-v2 --labels NEGATIVE,POSITIVE --max-length 66 --batch-size 32
        --eval-fraction 0.02 --split-seed 0 --eval-every 500 --precision bf16 --no-progress)

stage() {  # stage NAME ARGS...: run `fastsentiment train` into $work/NAME unless it already finished
  local name=$1; shift
  local out=$work/$name
  [ -f "$out/config.json" ] && { echo "== $name: done already"; return; }
  local resume=()
  [ -f "$out/checkpoints/last.pt" ] && resume=(--resume)
  echo "== $name: fastsentiment train $data/train.tsv --out $out ${common[*]} $* ${resume[*]}"
  fastsentiment train "$data/train.tsv" --out "$out" "${common[@]}" "$@" "${resume[@]}"
}

for seed in 1 2; do
  stage teacher-$seed --seed $seed --epochs 2 --learning-rate 3e-5
done
stage student --seed 4 --epochs 2 --learning-rate 5e-5 \
  --teacher "$work/teacher-1" --teacher "$work/teacher-2" \
  --distill-alpha 0.5 --distill-temperature 2 --save-dtype float16
