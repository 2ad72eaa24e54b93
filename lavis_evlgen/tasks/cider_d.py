"""CIDEr-D (Vedantam et al. 2015) with document frequencies fixed on a reference corpus, for SCST rewards.

pycocoevalcap's ``Cider`` already is CIDEr-D (clipped n-gram counts, Gaussian length penalty with
sigma 6, scores x10), but it takes the document frequencies from the captions passed to each call;
a self-critical reward scores a handful of captions at a time and needs them from the whole training
set, as Rennie et al. (2017) do. :class:`CiderD` computes the same quantities as pycocoevalcap's
``CiderScorer`` with the document frequencies and ``log |I|`` of the corpus given at construction:
scoring the corpus's own images gives exactly pycocoevalcap's per-image scores (tested).

For one hypothesis ``c`` of image ``i`` with references ``S_i`` (m of them), n-grams of length 1-4::

    g_k(s)  = count_k(s) * (log |I| - log max(1, df_k))                       (tf-idf, df over the corpus)
    sim_n   = sum_k min(g_k(c), g_k(s)) g_k(s) / (|g^n(c)| |g^n(s)|) * exp(-(l(c) - l(s))^2 / (2 sigma^2))
    CIDEr-D = 10 / m * sum_{s in S_i} mean_n sim_n

with ``l`` the number of bigrams, as in the reference implementation (one less than the word count).
Captions are lower-cased and split into words (:func:`words`); pycocoevalcap's PTB tokenizer runs Java
per call, too slow for a reward computed at every training step.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

NGRAM_MAX = 4
SIGMA = 6.0
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

def words(caption: str) -> str:
    """Lower-cased words joined by single spaces; punctuation dropped."""
    return " ".join(_WORD.findall(caption.lower()))


def ngram_counts(caption: str, n: int = NGRAM_MAX) -> Counter:
    """Counts of every 1..n-gram of the whitespace-split caption."""
    tokens = caption.split()
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


class _Vector:
    """tf-idf weights of one caption, per n-gram length, with their norms and the caption length."""

    def __init__(self, counts: Counter, log_df: Mapping[tuple[str, ...], float], log_docs: float, n: int):
        self.weights: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
        for ngram, tf in counts.items():  # an n-gram absent from the corpus counts as df = 1 (log 1 = 0)
            self.weights[len(ngram) - 1][ngram] = tf * (log_docs - log_df.get(ngram, 0.0))
        self.norms = [math.sqrt(sum(w * w for w in level.values())) for level in self.weights]
        self.length = sum(tf for ngram, tf in counts.items() if len(ngram) == 2)


class CiderD:
    """CIDEr-D of hypotheses against the references of a fixed corpus (keys: image or video ids)."""

    def __init__(self, references: Mapping[Hashable, Sequence[str]], n: int = NGRAM_MAX, sigma: float = SIGMA):
        if not references:
            raise ValueError("CIDEr-D needs at least one image with references")
        empty = [key for key, refs in references.items() if not refs]
        if empty:
            raise ValueError(f"CIDEr-D: no references for {empty[:5]}")
        self.n, self.sigma = n, sigma
        cooked = {key: [ngram_counts(words(r), n) for r in refs] for key, refs in references.items()}
        frequency: dict[tuple[str, ...], int] = defaultdict(int)
        for refs in cooked.values():
            for ngram in set().union(*refs):
                frequency[ngram] += 1
        self.log_docs = math.log(len(cooked))
        self.log_df = {ngram: math.log(max(1.0, df)) for ngram, df in frequency.items()}
        self.references = {key: [self._vector(c) for c in refs] for key, refs in cooked.items()}

    def _vector(self, counts: Counter) -> _Vector:
        return _Vector(counts, self.log_df, self.log_docs, self.n)

    def _similarity(self, hyp: _Vector, ref: _Vector) -> float:
        penalty = math.exp(-((hyp.length - ref.length) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for level in range(self.n):
            ref_weights = ref.weights[level]
            overlap = sum(min(w, ref_weights.get(ngram, 0.0)) * ref_weights.get(ngram, 0.0)
                          for ngram, w in hyp.weights[level].items())
            if hyp.norms[level] and ref.norms[level]:
                overlap /= hyp.norms[level] * ref.norms[level]
            total += overlap * penalty
        return total / self.n

    def score(self, hypothesis: str, key: Hashable) -> float:
        """CIDEr-D of one caption for the image ``key`` of the corpus."""
        if key not in self.references:
            raise KeyError(f"CIDEr-D: image {key!r} has no references in the corpus")
        hyp = self._vector(ngram_counts(words(hypothesis), self.n))
        refs = self.references[key]
        return 10.0 * sum(self._similarity(hyp, ref) for ref in refs) / len(refs)

    def scores(self, hypotheses: Iterable[str], keys: Iterable[Hashable]) -> np.ndarray:
        """CIDEr-D of each caption for its image."""
        return np.array([self.score(h, k) for h, k in zip(hypotheses, keys)], dtype=np.float64)
