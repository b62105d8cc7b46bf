"""Held-out accuracy of trained models, all measured by one evaluator: Hugging Face transformers fp32 on CPU over the
slice of SST-2 train that `fastsentiment train --eval-fraction 0.02 --split-seed 0` holds out (1,347 rows). The
training loop's own evaluation runs in the training precision (bf16 autocast where the CPU has it), so models trained
on different machines are compared here, never by the numbers in their training logs:

    python scripts/held_out_accuracy.py ../shared/data/sst2/train.tsv sst2-minilm-l6 runs/ensemble/student
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from fastsentiment import Classifier
from fastsentiment.train.data import read_labelled, split_held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_file")
    parser.add_argument("models", nargs="+", help="built-in names or model directories")
    parser.add_argument("--eval-fraction", type=float, default=0.02)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    data, _ = read_labelled(args.train_file, label_names=["NEGATIVE", "POSITIVE"])
    _, held_out = split_held_out(data, args.eval_fraction, args.split_seed)
    for model in args.models:
        classifier = Classifier.load(model, backend="torch", precision="fp32")
        correct = int((classifier.logits(list(held_out.texts)).argmax(1) == np.asarray(held_out.labels)).sum())
        print(
            json.dumps({"model": model, "correct": correct, "rows": len(held_out), "accuracy": correct / len(held_out)})
        )


if __name__ == "__main__":
    main()
