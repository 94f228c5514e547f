"""Toxicity scores from `alt-profanity-check` (TF-IDF + linear SVM shipped inside the package).

Chosen because it runs offline with no model download, scores 16k-60k texts/s on a CPU and reaches
AUC ~0.98 on RealToxicityPrompts-toxic vs BOLD (ASSETS.md). It is English-centric: it scores the German
article "die" 0.94, so `toxicity_by_language` applies it to English (and code) only, paragraph by
paragraph, and scores every other language with the word lists of `pharia.classifiers.wordlist`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CLASSIFIER_NAME = "alt-profanity-check==1.9.1"


def toxicity_scores(texts: Sequence[str]) -> np.ndarray:
    """Probability in [0, 1] that each text is toxic; empty input gives an empty array."""
    if not texts:
        return np.zeros(0, dtype=np.float64)
    from profanity_check import predict_prob  # deferred: loading the vectoriser takes ~1 s

    return np.asarray(predict_prob(list(texts)), dtype=np.float64)


ENGLISH_SCORED = frozenset({"en", "code"})  # code comments and identifiers are English
PARAGRAPH = re.compile(r"\n\s*\n")


def paragraph_toxicity(texts: Sequence[str]) -> np.ndarray:
    """The English SVM applied per paragraph, averaged with the paragraphs' lengths as weights.

    Why: scored whole, a long text is judged by its most loaded words. A 4,000-character Shakespeare
    chunk with one insulting speech scored above 0.5 in 397 of 1,349 chunks of the tiny preset
    (30 %); per paragraph, 27. A text that is one paragraph (a comment, a prompt, the usual toxic
    sample) scores exactly as before, and a document that is mostly toxic stays above the threshold.
    """
    parts: list[str] = []
    owners: list[int] = []
    for i, text in enumerate(texts):
        paragraphs = [p for p in PARAGRAPH.split(text) if p.strip()] or [text]
        parts.extend(paragraphs)
        owners.extend([i] * len(paragraphs))
    if not parts:
        return np.zeros(len(texts), dtype=np.float64)
    weights = np.asarray([len(p) for p in parts], dtype=np.float64)
    probs = toxicity_scores(parts)
    owner = np.asarray(owners)
    totals = np.bincount(owner, weights=weights, minlength=len(texts))
    sums = np.bincount(owner, weights=weights * probs, minlength=len(texts))
    return np.divide(sums, totals, out=np.zeros(len(texts)), where=totals > 0)


def toxicity_by_language(texts: Sequence[str], languages: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Score each text with the classifier that fits its language: the English SVM per paragraph
    (`paragraph_toxicity`) for English and code, the multilingual word lists
    (`pharia.classifiers.wordlist`) for every other language. Returns the scores and, per text,
    the name of the scorer used."""
    from pharia.classifiers.wordlist import WORDLIST_NAME, wordlist_toxicity

    if len(texts) != len(languages):
        raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
    english = [i for i, lang in enumerate(languages) if lang in ENGLISH_SCORED]
    other = [i for i, lang in enumerate(languages) if lang not in ENGLISH_SCORED]
    scores = np.zeros(len(texts), dtype=np.float64)
    scorers = [CLASSIFIER_NAME] * len(texts)
    scores[english] = paragraph_toxicity([texts[i] for i in english])
    scores[other] = wordlist_toxicity([texts[i] for i in other], [languages[i] for i in other])
    for i in other:
        scorers[i] = WORDLIST_NAME
    return scores, scorers
