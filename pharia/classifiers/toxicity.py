"""Toxicity scores from `alt-profanity-check` (TF-IDF + linear SVM shipped inside the package).

Chosen because it runs offline with no model download, scores 16k-60k texts/s on a CPU and reaches
AUC ~0.98 on RealToxicityPrompts-toxic vs BOLD (ASSETS.md). It is English-centric: a German insult is
scored lower than an English one; the multilingual filter of a later issue complements it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASSIFIER_NAME = "alt-profanity-check==1.9.1"


def toxicity_scores(texts: Sequence[str]) -> np.ndarray:
    """Probability in [0, 1] that each text is toxic; empty input gives an empty array."""
    if not texts:
        return np.zeros(0, dtype=np.float64)
    from profanity_check import predict_prob  # deferred: loading the vectoriser takes ~1 s

    return np.asarray(predict_prob(list(texts)), dtype=np.float64)
