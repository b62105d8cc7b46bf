#!/usr/bin/env bash
# The GPU section of docs/benchmarks.md, on a CUDA machine, in one go:
#
#     benchmarks/gpu.sh [SST2_DIR] [OUT_DIR]      (defaults: ../shared/data/sst2, runs/gpu)
#
# 1. what the machine is (GPU, driver, torch, ONNX Runtime's providers);
# 2. the CUDA tests (they skip on a machine without a GPU);
# 3. `classify --device cuda` on the built-in model;
# 4. `bench --device cuda` of the built-in and of a DistilBERT-base-sized model (random weights): torch fp32, bf16
#    and fp16, ONNX Runtime fp16 (a failed row where onnxruntime-gpu is not installed), transformers' pipeline at
#    batch 32 on the same GPU; then `auto` on the GPU against fp32;
# 5. 200 fine-tuning steps of the built-in model on SST-2 train, on the GPU, evaluated on SST-2 dev;
# 6. `backends --device cuda`.
# On an H200 with 16 cores the steps took 117, 20, 160, 13, 147, 88, 27 and ~10 s (2026-12-04, second run): about
# 10 minutes, more than one 600 s call of a lent machine can hold with its start; split it there.
#
# Each step runs however the one before it ended, with its own time limit, and writes its log into OUT_DIR; PYTHON
# picks the interpreter.
set -u
data=${1:-../shared/data/sst2}
out=${2:-runs/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
export FASTSENTIMENT_SST2=$(realpath "$data")  # the tests that read SST-2 (the bench test on CUDA among them)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/gpu.csv" 2>&1
"$python" - >"$out/versions.txt" 2>&1 <<'EOF'
import platform, onnxruntime, tokenizers, torch, transformers
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF
cat "$out/gpu.csv" "$out/versions.txt"

step tests 150 "$python" -m pytest -o addopts=-ra -p no:cacheprovider -q \
    tests/test_classifier.py tests/test_backend_onnx.py tests/test_auto.py tests/test_bench.py -k "cuda or fp16 or compare"
step classify 60 "$python" -m fastsentiment classify --device cuda --backend torch --json "I like cheese" "I hate cheesecake"
rows=torch:fp32,torch:bf16,torch:fp16,onnx:fp16,pipeline:32
sizes=1,8,32,128,512
step bench-builtin 200 "$python" -m fastsentiment bench --device cuda --backends "$rows" --batch-sizes "$sizes" \
    --timeout 90 --data "$data" --out "$out/builtin"
step make-distilbert-base 60 "$python" benchmarks/make_distilbert_base.py "$out/distilbert-base-model"
step bench-distilbert-base 200 "$python" -m fastsentiment bench --device cuda --backends "$rows" \
    --batch-sizes "$sizes" --timeout 90 --model "$out/distilbert-base-model" --data "$data" --out "$out/distilbert-base"
rm -rf "$out/distilbert-base-model"
step bench-auto 150 "$python" -m fastsentiment bench --device cuda --backends auto,torch:fp32 --batch-sizes "$sizes" \
    --timeout 90 --data "$data" --out "$out/auto"
step train 150 "$python" -m fastsentiment train "$data/train.tsv" --out "$out/train" --device cuda \
    --base-model sst2-minilm-l6 --max-steps 200 --batch-size 32 --eval-file "$data/dev.tsv" --no-progress
rm -rf "$out/train"/checkpoint* "$out/train"/*.safetensors
step backends 60 "$python" -m fastsentiment backends --device cuda
exit 0
