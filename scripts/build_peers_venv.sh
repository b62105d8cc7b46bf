#!/usr/bin/env bash
# Builds the virtual environment the benchmark's peer rows run in (`fastsentiment bench --peers DIR/bin/python`):
# optimum-intel (OpenVINO), optimum-onnx (ONNX Runtime, int8 quantiser) and CTranslate2. optimum pins
# transformers < 4.58 while fastsentiment needs 5.x, so the peers cannot share the main environment; this one
# holds them with fastsentiment's inference core (no extras), which feeds them the same batches.
# Usage: scripts/build_peers_venv.sh [DIR]   (default: .venv-peers)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.venv-peers}
python3 -m venv "$dir"
"$dir/bin/pip" install -q --upgrade pip
"$dir/bin/pip" install -q torch==2.13.0  # first and alone: the CPU build (see the README)
# Versions that resolved together on 2026-12-01; newer optimum releases may move these pins.
"$dir/bin/pip" install -q "optimum-intel[openvino]==1.27.0" "optimum-onnx[onnxruntime]==0.1.0" \
  "ctranslate2==4.8.5" "transformers==4.57.6"
"$dir/bin/pip" install -q -e "$root"
"$dir/bin/python" -c "import optimum.intel, optimum.onnxruntime, ctranslate2, fastsentiment; print('peers ready:', '$dir/bin/python')"
