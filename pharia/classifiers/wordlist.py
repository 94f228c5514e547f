"""Multilingual toxicity from the profanity word lists shipped in `glin-profanity` (24 languages).

Why word lists: no offline model for German or French toxicity runs here, and the English SVM of
`alt-profanity-check` mis-scores other languages (the German article "die" alone scores 0.94). Why
not glin-profanity's own `Filter`: with its obfuscation pipeline it checks ~40 long documents/s
here, too slow for an ingest; its curated lists are the useful part, so they are loaded once and
matched with a set lookup per word (whole words, case-folded).

The score is a density, so one swear word in a long article does not condemn it: the share of words
(plus listed multi-word phrases) that are on the document language's list or the English list
(code-switching is common), times `DENSITY_SCALE`, capped at 1. With the scale at 10, a document
reaches 0.5 when 5 % of its words are profane.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

import numpy as np

WORDLIST_NAME = "glin-profanity==4.1.0 word lists"
DENSITY_SCALE = 10.0
WORD = re.compile(r"\w+")
# ISO 639-1 -> glin-profanity's dictionary name.
GLIN_LANGUAGES = {
    "ar": "arabic",
    "zh": "chinese",
    "cs": "czech",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "hi": "hindi",
    "hu": "hungarian",
    "it": "italian",
    "ja": "japanese",
    "ko": "korean",
    "nb": "norwegian",
    "nn": "norwegian",
    "fa": "persian",
    "pl": "polish",
    "pt": "portuguese",
    "ru": "russian",
    "es": "spanish",
    "sv": "swedish",
    "th": "thai",
    "tr": "turkish",
}


@cache
def _lexicon(language: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Single words and multi-word phrases of one language's list together with the English list."""
    from glin_profanity.data.dictionary import DictionaryLoader

    loader = DictionaryLoader()
    entries = {w.casefold() for w in loader.get_words("english")}
    if language in GLIN_LANGUAGES:
        entries |= {w.casefold() for w in loader.get_words(GLIN_LANGUAGES[language])}
    words = frozenset(e for e in entries if WORD.fullmatch(e))
    phrases = tuple(sorted(e for e in entries if not WORD.fullmatch(e)))
    return words, phrases


def profane_hits(text: str, language: str) -> tuple[int, int]:
    """(listed words and phrases found, words in the text)."""
    words, phrases = _lexicon(language)
    folded = text.casefold()
    tokens = WORD.findall(folded)
    hits = sum(token in words for token in tokens)
    hits += sum(len(re.findall(rf"(?<!\w){re.escape(p)}(?!\w)", folded)) for p in phrases if p in folded)
    return hits, len(tokens)


def wordlist_toxicity(texts: Sequence[str], languages: Sequence[str]) -> np.ndarray:
    """Score in [0, 1] per text: DENSITY_SCALE x share of profane words, capped at 1."""
    scores = np.zeros(len(texts), dtype=np.float64)
    for i, (text, language) in enumerate(zip(texts, languages, strict=True)):
        hits, n_words = profane_hits(text, language)
        scores[i] = min(1.0, DENSITY_SCALE * hits / n_words) if n_words else 0.0
    return scores
