#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and docs/results/ on this machine (about 40 minutes on 2 cores):
#   benchmarks/regenerate_docs.sh [SST2_DIR]
# Run it on an idle machine: every number is a median over this run only. Hand-written sections live in
# docs/results/targets.md and docs/results/notes/*.md (one file per session, the highest number first on the page).
set -euo pipefail
data=${1:-../shared/data/sst2}
results=docs/results
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$results"
# The peer rows run in their own environment (scripts/build_peers_venv.sh); without it they are left out.
peers=()
[ -x .venv-peers/bin/python ] && peers=(--peers .venv-peers/bin/python)

python benchmarks/make_distilbert_base.py "$scratch/distilbert-base" >/dev/null
fastsentiment bench --data "$data" --out "$results/builtin" --batch-sizes 1,8,32,128 "${peers[@]}" \
    --backends torch:fp32,auto,onnx:int8,onnx:int8-dynamic,onnx:fp32,openvino:bf16,openvino:int8-static,openvino:fp32,torch:bf16,ane:fp32,pipeline,pipeline:32
fastsentiment bench --data "$data" --model "$scratch/distilbert-base" --out "$results/distilbert-base" \
    --backends torch:fp32,auto,onnx:int8,onnx:int8-dynamic,openvino:bf16,openvino:int8-static,torch:bf16,pipeline:32 \
    --batch-sizes 1,32 "${peers[@]}"
python benchmarks/cold_start.py --data "$data/test.tsv" --out "$results/cold-start-builtin.json"
python benchmarks/cold_start.py --data "$data/test.tsv" --model "$scratch/distilbert-base" \
    --out "$results/cold-start-distilbert-base.json"
python benchmarks/serve_load.py --data "$data/test.tsv" --out "$results/serve-load.json"
python benchmarks/stream_files.py --data "$data/train.tsv" --out "$results/stream-files.json"
python benchmarks/cpu_ceiling.py --data "$data/test.tsv" --model sst2-minilm-l6 --model "$scratch/distilbert-base" \
    --out "$results/cpu-ceiling.json"
python benchmarks/int8_variants.py --data "$data" --out "$results/int8-variants.json"
python benchmarks/ane_layernorm.py --data "$data/dev.tsv" > "$results/ane-layernorm.md"
python benchmarks/write_benchmarks_md.py "$results" > docs/benchmarks.md
