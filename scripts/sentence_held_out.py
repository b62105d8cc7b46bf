"""A held-out set of whole sentences for comparing student recipes, cut from the students' own training rows.

The 2% held-out slice that `train` splits off (`--eval-fraction 0.02 --split-seed 0`) is mostly short phrases, and
the sentences and phrases around each of its rows stay in training: it tells students apart poorly, and not on the
kind of text SST-2 dev holds. This script takes N sentences of 10 words or more from the rows the students train
on (those the saved teacher logits cover), and removes from those rows every row that is a phrase of a held-out
sentence or contains one, so a student trained on the rest has seen none of them. It writes the rest (as a
training file) with the teacher's logits over it, and the held-out sentences (as an evaluation file):

    python scripts/sentence_held_out.py ../shared/data/sst2/train.tsv scripts/teacher-logits/mpnet-2ep.npz \\
        runs/sentence-split --sentences 800
    fastsentiment train runs/sentence-split/train.jsonl --eval-file runs/sentence-split/held-out.jsonl \\
        --teacher-logits runs/sentence-split/teacher-logits.npz --labels NEGATIVE,POSITIVE ...

With `--unlabelled FILE` (as given to `save_teacher_logits.py` and `train`), the logits file covers those texts too,
and the logits written cover the rows left and then the file's texts, as `train --unlabelled FILE` on the rows left
expects.

The teacher learnt from every row, held-out sentences included; two recipes distilled from its logits share that,
so the comparison between them stays fair, but the absolute accuracy is not a clean estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastsentiment.errors import FastSentimentError
from fastsentiment.train.data import LabelledData, read_labelled, read_unlabelled, split_held_out
from fastsentiment.train.trainer import distillation_data, load_teacher_logits, save_teacher_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_file", type=Path)
    parser.add_argument("teacher_logits", type=Path, help="saved over the rows that --eval-fraction leaves")
    parser.add_argument("out", type=Path)
    parser.add_argument("--sentences", type=int, default=800)
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-fraction", type=float, default=0.02)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--unlabelled", type=Path, action="append", default=[], help="as `train --unlabelled`")
    args = parser.parse_args()

    data, labels = read_labelled(args.train_file, label_names=["NEGATIVE", "POSITIVE"])
    rows, slice_held_out = split_held_out(data, args.eval_fraction, args.split_seed)
    unlabelled = read_unlabelled(args.unlabelled)
    texts, _ = distillation_data(rows, slice_held_out, 0, args.split_seed, unlabelled)
    logits = load_teacher_logits(args.teacher_logits, texts, labels)
    long_rows = [i for i, text in enumerate(rows.texts) if len(text.split()) >= args.min_words]
    chosen = np.random.default_rng(args.seed).choice(long_rows, size=args.sentences, replace=False)
    held = [f" {rows.texts[i].strip()} " for i in chosen]
    joined = "\n".join(held)
    keep = []
    for i, text in enumerate(rows.texts):
        padded = f" {text.strip()} "
        # Word-bounded containment either way: a phrase of a held-out sentence, or a sentence holding one.
        if padded in joined or any(sentence in padded for sentence in held if len(sentence) <= len(padded)):
            continue
        keep.append(i)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.jsonl", [(rows.texts[i], labels[rows.labels[i]]) for i in keep])
    write(args.out / "held-out.jsonl", [(rows.texts[i], labels[rows.labels[i]]) for i in chosen])
    left = LabelledData([rows.texts[i] for i in keep], rows.labels[keep])
    held_out = LabelledData([rows.texts[i] for i in chosen], rows.labels[chosen])
    left_texts, _ = distillation_data(left, held_out, 0, args.split_seed, unlabelled)
    position = {text: i for i, text in enumerate(texts)}  # distillation_data keeps each text once
    save_teacher_logits(
        args.out / "teacher-logits.npz", logits[[position[t] for t in left_texts]], left_texts, labels=labels
    )
    print(f"{len(chosen)} held-out sentences; {len(keep):,} of {len(rows):,} rows left to train on")


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"sentence": text, "label": label}) + "\n" for text, label in rows))


if __name__ == "__main__":
    try:
        main()
    except FastSentimentError as error:  # e.g. logits of other training rows: one line, no traceback
        raise SystemExit(f"error: {error}") from None
