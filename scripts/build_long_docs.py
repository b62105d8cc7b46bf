"""Build the long-document evaluation set from SST-2 dev: documents that truncation alone cannot get right.

    python scripts/build_long_docs.py ../shared/data/sst2/dev.tsv long-docs.tsv [--documents 200] [--seed 13]

Each document is made of dev sentences and is 600-3,000 tokens long (the built-in model's tokenizer). Its
first 512 tokens alternate positive and negative sentences, so they say nothing about the document's label;
every sentence after them carries the document's label. A classifier that reads only the first 512 tokens is
at chance; one that reads the whole document can be right. Labels are balanced and the seed fixes everything.
The output is a .tsv with `sentence` and `label` columns, as SST-2's, so `fastsentiment evaluate` and
`fastsentiment bench --data` take it as it is.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

HEAD_TOKENS = 512
MIN_TOKENS, MAX_TOKENS = 600, 3000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dev", type=Path, help="SST-2 dev.tsv (sentence, label)")
    parser.add_argument("out", type=Path, help="the .tsv to write")
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import TextEncoder

    with open(args.dev, encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    encoder = TextEncoder.from_model_dir(resolve_model(None))
    # Tokens a sentence adds inside a document: its own, without the [CLS]/[SEP] a lone sentence gets.
    lengths = [len(e.ids) - 2 for e in encoder.encodings([r["sentence"] for r in rows])]
    by_label = {label: [(r["sentence"], n) for r, n in zip(rows, lengths, strict=True) if r["label"] == label]
                for label in ("0", "1")}  # fmt: skip
    rng = random.Random(args.seed)
    documents = []
    for number in range(args.documents):
        label = str(number % 2)
        target = rng.randint(MIN_TOKENS, MAX_TOKENS)
        sentences, tokens, turn = [], 2, rng.choice("01")
        while tokens < HEAD_TOKENS:  # the head: positive and negative sentences by turns
            sentence, n = rng.choice(by_label[turn])
            sentences.append(sentence)
            tokens += n
            turn = "1" if turn == "0" else "0"
        while tokens < target:  # the rest: the document's own label only
            sentence, n = rng.choice(by_label[label])
            sentences.append(sentence)
            tokens += n
        documents.append((" ".join(sentences), label))
    rng.shuffle(documents)
    with open(args.out, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None)
        writer.writerow(["sentence", "label"])
        writer.writerows(documents)
    print(f"wrote {len(documents)} documents to {args.out}")


if __name__ == "__main__":
    main()
