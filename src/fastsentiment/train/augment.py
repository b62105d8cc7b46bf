"""Perturbed copies of training sentences for a teacher to label: more of the teacher's judgement for the student.

A student distilled only on the labelled rows sees the teacher's logits on those rows alone. Sentences with
words dropped, swapped for other words of the corpus, or cut to a span are new inputs near the data; the
teacher's logits on them carry what it knows about sentences the labels never cover (the idea of Tang et al.,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", 2019, without the part-of-speech
tagger). The copies have no labels: the student learns only the teacher's distribution on them.

Deterministic for a seed, so a run that saved the teacher's logits and a later run build the same texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    copies: int  # perturbed copies per source sentence
    min_words: int = 10  # shorter rows are left alone: SST-2's phrases are already spans of its sentences
    drop: float = 0.15  # chance that a word is left out
    replace: float = 0.10  # chance that a word becomes another word of the corpus (see _word_frequencies)
    span: float = 0.25  # chance that a copy is cut to a random span of at least three words
    seed: int = 0

    def texts(self, sentences: list[str], avoid: Iterable[str] = ()) -> list[str]:
        """New texts made from the sentences of `min_words` or more, in a fixed order, none equal to a sentence
        given or to each other.

        `avoid` is a held-out slice: no copy is made from a sentence that contains one of its texts. The copies
        of such a sentence would carry the teacher's answer on that held-out phrase (or one a word away) into
        training, and the held-out accuracy of a student distilled on them would then measure memory, not
        generalisation, flattering it against one trained without copies."""
        if self.copies < 1:
            return []
        rng = np.random.default_rng(self.seed)
        vocabulary, cumulative = _word_frequencies(sentences)
        held_out = {" ".join(text.split()) for text in avoid}
        existing = {" ".join(sentence.split()) for sentence in sentences} | held_out  # SST-2 rows end in a space
        longest = max((len(text.split()) for text in held_out), default=0)
        made: list[str] = []
        for sentence in sentences:
            words = sentence.split()
            if len(words) < self.min_words or _contains_any(words, held_out, longest):
                continue
            for _ in range(self.copies):
                text = " ".join(self._perturb(words, vocabulary, cumulative, rng))
                if text and text not in existing:
                    existing.add(text)
                    made.append(text)
        return made

    def _perturb(self, words: list[str], vocabulary: np.ndarray, cumulative: np.ndarray, rng) -> list[str]:
        draws = rng.random(len(words))
        picks = np.minimum(np.searchsorted(cumulative, rng.random(len(words))), len(vocabulary) - 1)
        replacements = vocabulary[picks]
        out = [
            str(replacement) if draw < self.replace else word
            for word, draw, replacement in zip(words, draws, replacements, strict=True)
            if not self.replace <= draw < self.replace + self.drop
        ]
        if len(out) > 3 and rng.random() < self.span:
            length = int(rng.integers(3, len(out)))
            start = int(rng.integers(0, len(out) - length + 1))
            out = out[start : start + length]
        return out


def _contains_any(words: list[str], texts: set[str], longest: int) -> bool:
    """Whether a run of consecutive words equals one of `texts` (of at most `longest` words)."""
    return any(
        " ".join(words[start : start + length]) in texts
        for start in range(len(words))
        for length in range(1, min(longest, len(words) - start) + 1)
    )


def _word_frequencies(sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The corpus's words and the cumulative chance of drawing each: a word's chance follows the square root of its
    count, so that replacements are not nearly all "the" and "," and content words (which move sentiment) come
    often enough."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for word in sentence.split():
            counts[word] = counts.get(word, 0) + 1
    words = np.array(sorted(counts))
    frequency = np.sqrt(np.array([counts[w] for w in words], dtype=np.float64))
    return words, np.cumsum(frequency) / frequency.sum()
