"""Run a fine-tuned teacher over the training texts once and save its logits for `train --teacher-logits`.

    python scripts/save_teacher_logits.py runs/builtin/teacher-mpnet-2ep ../shared/data/sst2/train.tsv \
        runs/builtin/teacher-logits.npz [--backend openvino --precision bf16]

The texts are the ones `fastsentiment train` trains on with the same --eval-file (else --eval-fraction and
--split-seed), --text-column, --label-column, --augment and --unlabelled (the held-out slice is left out; perturbed copies, then unlabelled texts follow the rows), so a student run with those options accepts
the file. `train --teacher` computes the same logits in fp32; this script lets a faster faithful path do it
(OpenVINO bf16 on a CPU with AMX agreed with fp32 on 99.89% of a trained MPNet's SST-2 dev labels, max |Δlogit|
0.05, docs/architectures.md), and the file outlives the teacher: a later run needs neither its weights nor the
hours it took to train.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fastsentiment import Classifier
from fastsentiment.errors import FastSentimentError
from fastsentiment.train.attention import teacher_attention
from fastsentiment.train.data import read_labelled, read_unlabelled, split_held_out
from fastsentiment.train.trainer import distillation_data, save_teacher_logits, teacher_states, training_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path)
    parser.add_argument("train_file", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--eval-file", type=Path, help="as `train --eval-file`: every row of the training file is trained on"
    )
    parser.add_argument("--eval-fraction", type=float, default=0.02)
    parser.add_argument("--text-column", help="as `train --text-column`")
    parser.add_argument("--label-column", default="label", help="as `train --label-column`")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=66)
    parser.add_argument("--augment", type=int, default=0, help="as `train --augment`: the copies get logits too")
    parser.add_argument(
        "--unlabelled", type=Path, action="append", default=[], help="as `train --unlabelled`: its texts get logits too"
    )
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", help="default: the backend's own (OpenVINO: bf16 where the CPU has it)")
    parser.add_argument(
        "--features",
        action="store_true",
        help="also save the teacher's last-layer first-token states (for `train --feature-weight`; PyTorch, bf16 "
        "where the CPU computes it; about 100 MB for SST-2 train)",
    )
    parser.add_argument(
        "--attention",
        action="store_true",
        help="also save the teacher's last-layer self-attention (for `train --attention-weight`; PyTorch, bf16 where "
        "the CPU computes it)",
    )
    args = parser.parse_args()
    try:
        teacher = Classifier.load(
            args.teacher, backend=args.backend, precision=args.precision, max_length=args.max_length
        )
        columns = {"text_column": args.text_column, "label_column": args.label_column}
        data, _ = read_labelled(args.train_file, label_names=teacher.labels, **columns)
        evaluated = args.eval_file and read_labelled(args.eval_file, label_names=teacher.labels, **columns)[0]
        unlabelled = read_unlabelled(args.unlabelled, args.text_column, lambda note: print(note, file=sys.stderr))
    except FastSentimentError as error:
        sys.exit(f"error: {error}")
    train, held_out = (data, evaluated) if evaluated else split_held_out(data, args.eval_fraction, args.split_seed)
    texts, _ = distillation_data(train, held_out, args.augment, args.split_seed, unlabelled)
    started = time.perf_counter()
    logits = teacher.logits(texts)
    features = None
    if args.features:
        import torch

        device = torch.device("cpu")
        features = teacher_states(teacher.model, texts, args.max_length, device, training_precision("auto", device))
    attention = None
    if args.attention:
        import torch

        device = torch.device("cpu")
        attention = teacher_attention(teacher.model, texts, args.max_length, device, training_precision("auto", device))
    save_teacher_logits(args.out, logits, texts, features, attention, labels=teacher.labels)
    print(
        f"{len(texts):,} texts in {time.perf_counter() - started:.0f} s on {args.backend} {teacher.backend.precision}: {args.out}"
    )


if __name__ == "__main__":
    main()
