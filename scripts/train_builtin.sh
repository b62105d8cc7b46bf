#!/usr/bin/env bash
# Trains the built-in model `sst2-minilm-l6`: all-mpnet-base-v2 (MPNet, 110 M parameters) fine-tuned on SST-2
# train as the teacher, then three candidate students from all-MiniLM-L6-v2 (22.7 M) distilled from the teacher's
# logits; scripts/ship_builtin.py ships the candidate with the best held-out accuracy.
# Every stage is resumable: rerun this script after an interruption and it continues where it stopped.
# Model selection uses a held-out 2% of train only (--eval-fraction 0.02 --split-seed 0); dev is never read.
# Usage: scripts/train_builtin.sh [SST2_DIR] [WORK_DIR] [--saved-teacher-logits]
#   --saved-teacher-logits: no teacher stage; the students learn from the logits in scripts/teacher-logits/ that
#   two runs of the teacher stage saved (scripts/save_teacher_logits.py, OpenVINO bf16 on a Xeon with AMX): the
#   first two students from mpnet-2ep.npz (the run of 2026-12-02 afternoon), the third from
#   mpnet-2ep-r2-augment3.npz (the same recipe run again on the evening of 2026-12-02, its logits over the rows
#   and their perturbed copies). That saves the teacher's hours on a machine without bf16 arithmetic.
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

# A teacher's logits over the training texts are all the students need from it: saved once
# (scripts/save_teacher_logits.py, OpenVINO, bf16 where the CPU has it), they replace the teacher stage: one file
# over the training rows, one over the rows and three perturbed copies of each long sentence (`train --augment 3`).
# Delete them to train the teacher again.
logits=$work/teacher-logits.npz
augmented=$work/teacher-logits-augment3.npz
if [ "${3:-}" = "--saved-teacher-logits" ]; then
  cp "$here/teacher-logits/mpnet-2ep.npz" "$logits"
  cp "$here/teacher-logits/mpnet-2ep-r2-augment3.npz" "$augmented"
fi
if [ ! -f "$logits" ] || [ ! -f "$augmented" ]; then
  "$here/fetch_mpnet_teacher.sh" "$work/all-mpnet-base-v2"
  # Two epochs of 32 (4,210 steps): on 2 cores with bf16 arithmetic (AMX) about 40 min an epoch; without it
  # (AVX2 only, fp32) about 2.4 h an epoch, so run it in the background: every stage resumes where it stopped.
  stage teacher-mpnet-2ep --base-model "$work/all-mpnet-base-v2" --seed 1 --epochs 2 \
    --learning-rate 2e-5 --eval-every 500
  for copies in 0 3; do
    out=$([ "$copies" = 0 ] && echo "$logits" || echo "$augmented")
    [ -f "$out" ] || python "$here/save_teacher_logits.py" "$work/teacher-mpnet-2ep" "$data/train.tsv" "$out" \
      --augment "$copies"
  done
else
  echo "== teacher: using the saved logits in $logits and $augmented"
fi
# Three students, about 30, 35 and 35 minutes with bf16 arithmetic on 2 cores. The second leans more on the teacher
# (alpha 0.1), trains a fourth epoch and keeps an exponential moving average of its weights; the third is the
# second distilled also on the perturbed copies, for three epochs (each about 1.9 times as many steps).
stage student-2ep --base-model all-MiniLM-L6-v2 --seed 4 --epochs 3 --learning-rate 5e-5 \
  --teacher-logits "$logits" --distill-alpha 0.2 --distill-temperature 2 --save-dtype float16
stage student-4ep-ema --base-model all-MiniLM-L6-v2 --seed 5 --epochs 4 --learning-rate 5e-5 \
  --teacher-logits "$logits" --distill-alpha 0.1 --distill-temperature 2 --ema 0.999 --save-dtype float16
stage student-augment3-ema --base-model all-MiniLM-L6-v2 --seed 5 --epochs 3 --learning-rate 5e-5 \
  --teacher-logits "$augmented" --augment 3 --distill-alpha 0.1 --distill-temperature 2 --ema 0.999 \
  --save-dtype float16
