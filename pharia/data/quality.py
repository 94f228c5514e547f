"""Gopher-style quality heuristics (Rae et al. 2021, "Scaling Language Models", appendix A) as a score.

Gopher drops a document that breaks any single rule. Here the rules are grouped by the property they
measure (Gopher's six duplicated-n-gram limits are one signal, not six votes), each group is a
pass/fail check and the document's quality score is the fraction of applicable groups it passes,
so one borderline signal (a short conversation, a list-heavy page) lowers the score without
deciding alone; the `quality` filter drops
documents whose score is below `DataConfig.quality_threshold`, and the names of the failed groups
are kept per document so a reviewer sees why. The same score ranks documents for the high-quality subset.

Prose rules do not fit source code: identifiers are long "words", symbols are syntax and a line like
`return None` legitimately repeats. The code domain therefore gets its own rule set (generated or
minified files, binary-looking text, copy-pasted blocks), measured to keep the CPython stdlib.
Stop-word rules are left out: they are English-specific and the corpus is multilingual.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·")
ELLIPSES = ("...", "…")
WORD = re.compile(r"\S+")
ALPHABETIC_WORD = re.compile(r"\S*[^\W\d_]\S*")  # a whitespace-delimited word with at least one letter

# Gopher thresholds: duplicate line/paragraph fractions (by count and by characters), the share of
# characters covered by the most frequent n-gram (n = 2..4) and by duplicated n-grams (n = 5..10).
TOP_NGRAM_MAX = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAM_MAX = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


@dataclass(frozen=True, slots=True)
class Quality:
    """The score in [0, 1] (fraction of applicable rules passed) and the names of the failed rules."""

    score: float
    failed: tuple[str, ...]


def _dup_fraction(parts: list[str]) -> tuple[float, float]:
    """Fraction of parts that repeat an earlier part, by count and by characters."""
    if not parts:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_count = dup_chars = 0
    for part in parts:
        if part in seen:
            dup_count += 1
            dup_chars += len(part)
        seen.add(part)
    total_chars = sum(map(len, parts)) or 1
    return dup_count / len(parts), dup_chars / total_chars


def _top_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Characters covered by the most frequent n-gram (counted each time it occurs) over all word characters."""
    if len(words) < n or not total_chars:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    gram, freq = counts.most_common(1)[0]
    if freq < 2:
        return 0.0
    return freq * sum(len(w) for w in gram) / total_chars


def _dup_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Characters of words inside n-grams that occur more than once, over all word characters."""
    if len(words) < n or not total_chars:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            for j in range(i, i + n):
                covered[j] = True
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / total_chars


def _dup_ngrams_ok(words: list[str], word_chars: int) -> bool:
    """All of Gopher's duplicated-n-gram limits (n = 5..10). Words covered by a repeated 6-gram are
    covered by a repeated 5-gram too, so when n = 5 is under the strictest limit every n passes and
    the other five passes are skipped (most documents: the rule costs one pass instead of six)."""
    if _dup_ngram_fraction(words, 5, word_chars) <= min(DUP_NGRAM_MAX.values()):
        return True
    return all(_dup_ngram_fraction(words, n, word_chars) <= limit for n, limit in DUP_NGRAM_MAX.items())


def _repetition_checks(text: str, words: list[str]) -> dict[str, bool]:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    line_count, line_chars = _dup_fraction(lines)
    para_count, para_chars = _dup_fraction(paragraphs)
    word_chars = sum(map(len, words))
    checks = {
        "duplicate_lines": line_count <= 0.30 and line_chars <= 0.20,
        "duplicate_paragraphs": para_count <= 0.30 and para_chars <= 0.20,
        "top_ngram": all(_top_ngram_fraction(words, n, word_chars) <= limit for n, limit in TOP_NGRAM_MAX.items()),
        "duplicate_ngrams": _dup_ngrams_ok(words, word_chars),
    }
    return checks


def _prose_checks(text: str, words: list[str], min_words: int) -> dict[str, bool]:
    lines = [line.strip() for line in text.split("\n") if line.strip()] or [""]
    n_words = len(words) or 1
    mean_word = sum(map(len, words)) / n_words
    symbols = sum(text.count(s) for s in ("#", *ELLIPSES))
    return {
        "word_count": min_words <= len(words) <= 100_000,
        "mean_word_length": 3 <= mean_word <= 10,
        "symbol_word_ratio": symbols / n_words <= 0.10,
        "bullet_lines": sum(line.startswith(BULLETS) for line in lines) / len(lines) <= 0.90,
        "ellipsis_lines": sum(line.endswith(ELLIPSES) for line in lines) / len(lines) <= 0.30,
        "alphabetic_words": len(ALPHABETIC_WORD.findall(text)) / n_words >= 0.80,
        **_repetition_checks(text, words),
    }


def _code_checks(text: str) -> dict[str, bool]:
    """Rules that separate hand-written source from generated, minified, encoded or pasted files."""
    lines = text.split("\n")
    nonblank = [line.strip() for line in lines if line.strip()] or [""]
    n_chars = len(text) or 1
    # Lines long enough to carry content: short ones (`pass`, `}`, `else:`) repeat in any program.
    substantial = [line for line in nonblank if len(line) >= 20]
    dup_count, _ = _dup_fraction(substantial)
    return {
        "max_line_length": max(len(line) for line in lines) <= 1000,
        "mean_line_length": sum(map(len, nonblank)) / len(nonblank) <= 100,
        "alphabetic_chars": sum(map(str.isalpha, text)) / n_chars >= 0.25,
        "dup_substantial_lines": dup_count <= 0.50,
    }


def quality(text: str, domain: str, min_words: int = 50) -> Quality:
    """Score one normalised document; `domain == "code"` selects the code rules."""
    checks = _code_checks(text) if domain == "code" else _prose_checks(text, WORD.findall(text), min_words)
    failed = tuple(name for name, ok in checks.items() if not ok)
    return Quality(round(1 - len(failed) / len(checks), 6), failed)
