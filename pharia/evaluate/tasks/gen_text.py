"""Text statistics of generated continuations: n-gram diversity and repetition (generation quality)
and answer overlap with references (TruthfulQA). Tokens are whitespace-separated words, not model
tokens, so the numbers compare across models with different tokenizers.

Hand-written because the definitions are a few lines each and must match the metric descriptions
exactly: `rouge_score` is not installed, and its tokenizer differs from the SQuAD normalisation
used here for both overlap scores.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

ARTICLES = re.compile(r"\b(a|an|the)\b")


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of one token sequence, in order (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> tuple[float, int]:
    """Distinct-n (Li et al. 2016) over a corpus: unique n-grams / total n-grams, counting n-grams
    within each text (none span two texts), whitespace tokens, case-sensitive. Returns the ratio
    (0.0 when there is no n-gram at all) and the total number of n-grams."""
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        grams = ngrams(text.split(), n)
        total += len(grams)
        unique.update(grams)
    return (len(unique) / total if total else 0.0), total


def seq_rep_n(text: str, n: int = 4) -> float:
    """seq-rep-n of one text (Welleck et al. 2019, "Neural text generation with unlikelihood
    training"): 1 - unique n-grams / total n-grams, i.e. the share of n-gram occurrences that repeat
    an earlier n-gram of the same text. A text with fewer than n tokens repeats nothing: 0.0."""
    grams = ngrams(text.split(), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def normalise_answer(text: str) -> list[str]:
    """SQuAD answer normalisation: lowercase, Unicode punctuation removed, the articles a/an/the
    removed, split on whitespace."""
    text = text.lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return ARTICLES.sub(" ", text).split()


def token_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """SQuAD token F1 between two normalised token lists (1.0 when both are empty, 0.0 when one is)."""
    if not prediction or not reference:
        return float(not prediction and not reference)
    common = sum((Counter(prediction) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure (Lin 2004, beta = 1) between two normalised token lists: with L the LCS
    length, P = L / len(prediction), R = L / len(reference), F = 2PR / (P + R); 0.0 when L = 0."""
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)
