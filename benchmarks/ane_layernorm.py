"""How far predictions move when Hugging Face LayerNorm parameters are loaded into the ANE layout's
(x_hat + b) * w LayerNorm without rescaling b: the numbers behind docs/ane-layernorm.md.

    python benchmarks/ane_layernorm.py [--model sst2-minilm-l6] [--data ../shared/data/sst2/dev.tsv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from fastsentiment import Classifier
from fastsentiment.models import resolve_model
from fastsentiment.models.ane import ane_model_from_dir

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["I like cheese", "I like cheesecake", "I hate cheesecake"]


def logits_of(network, clf: Classifier, texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), len(clf.labels)), dtype=np.float32)
    sequences = clf.encoder.encode(texts)
    order = np.argsort([len(s) for s in sequences])
    for start in range(0, len(order), 64):
        rows = order[start : start + 64]
        batch = clf.encoder.pad([sequences[i] for i in rows])
        with torch.inference_mode():
            out[rows] = network(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv")
    args = parser.parse_args()
    model = resolve_model(args.model)
    clf = Classifier.load(model.path, backend="torch")
    with open(args.data, encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts, labels = [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])
    reference = clf.logits(texts)
    right = logits_of(ane_model_from_dir(model), clf, texts)
    wrong = logits_of(ane_model_from_dir(model, rescale_layernorm_bias=False), clf, texts)
    print("| mapping | agreement with Hugging Face | dev accuracy | max abs logit difference |\n|---|---|---|---|")
    for name, logits in [
        ("Hugging Face (reference)", reference),
        ("b / w (ours)", right),
        ("b unscaled (the bug)", wrong),
    ]:
        print(
            f"| {name} | {(logits.argmax(1) == reference.argmax(1)).mean():.2%} | {(logits.argmax(1) == labels).mean():.2%} "
            f"| {np.abs(logits - reference).max():.2e} |"
        )
    print("\n| sentence | Hugging Face logits | ANE, b / w | ANE, b unscaled |\n|---|---|---|---|")
    names = clf.labels
    for text, a, b, c in zip(
        SENTENCES,
        clf.logits(SENTENCES),
        *(
            logits_of(n, clf, SENTENCES)
            for n in (ane_model_from_dir(model), ane_model_from_dir(model, rescale_layernorm_bias=False))
        ),
        strict=True,
    ):
        show = lambda v: f"[{v[0]:.2f}, {v[1]:.2f}] {names[int(v.argmax())]}"  # noqa: E731
        print(f"| {text} | {show(a)} | {show(b)} | {show(c)} |")


if __name__ == "__main__":
    main()
