#!/usr/bin/env bash
# Trains the built-in model `sst2-minilm-l6`: all-mpnet-base-v2 (MPNet, 110 M parameters) fine-tuned on SST-2
# train as the teacher, then two candidate students from all-MiniLM-L6-v2 (22.7 M) distilled from the teacher's
# logits; scripts/ship_builtin.py ships the candidate with the better held-out accuracy.
# Every stage is resumable: rerun this script after an interruption and it continues where it stopped.
# Model selection uses a held-out 2% of train only (--eval-fraction 0.02 --split-seed 0); dev is never read.
# Usage: scripts/train_builtin.sh [SST2_DIR] [WORK_DIR] [--saved-teacher-logits]
#   --saved-teacher-logits: no teacher stage; the students learn from scripts/teacher-logits/mpnet-2ep.npz, the
#   logits of the two-epoch MPNet teacher this script trained on 2026-12-02 (scripts/save_teacher_logits.py,
#   OpenVINO bf16 on a Xeon with AMX), which saves that teacher's hours on a machine without bf16 arithmetic.
set -euo pipefail
data=${1:-../shared/data/sst2}
work=${2:-runs/builtin}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
exec > >(tee -a "$work/log.txt") 2>&1  # ship_builtin.py reads each stage's wall time from this log
common=(--labels NEGATIVE,POSITIVE --max-length 66 --batch-size 32
        --eval-fraction 0.02 --split-seed 0 --eval-every 500 --no-progress)

stage() {  # stage NAME ARGS...: run `fastsentiment train` into $work/NAME unless it already finished
  local name=$1; shift
  local out=$work/$name
  [ -f "$out/config.json" ] && { echo "== $name: done already"; return; }
  local resume=()
  [ -f "$out/checkpoints/last.pt" ] && resume=(--resume)
  echo "== $name: started $(date -u +%FT%TZ)"
  echo "   fastsentiment train $data/train.tsv --out $out ${common[*]} $* ${resume[*]}"
  local started=$SECONDS
  fastsentiment train "$data/train.tsv" --out "$out" "${common[@]}" "$@" "${resume[@]}"
  echo "== $name: finished $(date -u +%FT%TZ) after $(( (SECONDS - started) / 60 )) min"
}

# A teacher's logits over the training texts are all the student needs from it: saved once
# (scripts/save_teacher_logits.py), they replace the teacher stage. Delete the file to train the teacher again.
logits=$work/teacher-logits.npz
if [ "${3:-}" = "--saved-teacher-logits" ]; then
  cp "$here/teacher-logits/mpnet-2ep.npz" "$logits"
fi
if [ -f "$logits" ]; then
  echo "== teacher: using the saved logits in $logits"
  teacher=(--teacher-logits "$logits")
else
  "$here/fetch_mpnet_teacher.sh" "$work/all-mpnet-base-v2"
  # Two epochs of 32 (4,210 steps): on 2 cores with bf16 arithmetic (AMX) about 40 min an epoch; without it
  # (AVX2 only, fp32) about 2.4 h an epoch, so run it in the background: every stage resumes where it stopped.
  stage teacher-mpnet-2ep --base-model "$work/all-mpnet-base-v2" --seed 1 --epochs 2 \
    --learning-rate 2e-5 --eval-every 500
  teacher=(--teacher "$work/teacher-mpnet-2ep")
fi
# Two students, about 30 and 40 minutes with bf16 arithmetic on 2 cores: the second leans more on the teacher
# (alpha 0.1), trains a fourth epoch and keeps an exponential moving average of its weights.
stage student-2ep --base-model all-MiniLM-L6-v2 --seed 4 --epochs 3 --learning-rate 5e-5 \
  "${teacher[@]}" --distill-alpha 0.2 --distill-temperature 2 --save-dtype float16
stage student-4ep-ema --base-model all-MiniLM-L6-v2 --seed 5 --epochs 4 --learning-rate 5e-5 \
  "${teacher[@]}" --distill-alpha 0.1 --distill-temperature 2 --ema 0.999 --save-dtype float16
