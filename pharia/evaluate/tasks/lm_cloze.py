"""LAMBADA-style last-word cloze passages cut from held-out text.

LAMBADA itself ships in no installed package, so the task builds the same kind of item from the
pipeline's held-out documents (never trained on): a passage of `MIN_WORDS`..`MAX_WORDS` words that
ends a sentence on a word the model must predict. The rule, applied to each document from its start:

1. Words are maximal runs of non-whitespace. A *target* is a word of the form `<letters><end>`:
   3 or more ASCII letters followed by sentence-final punctuation (`.`, `!` or `?`, optionally then
   closing quotes or brackets). The target word is the letters only.
2. The passage ends at the target and starts at most `MAX_WORDS - 1` words before it (and not before
   the end of the previous passage taken from the same document); within that window it starts at
   the first sentence start (the document start, or a word after a word ending in `.`, `!`, `?`,
   optionally followed by closing quotes or brackets) that still leaves >= `MIN_WORDS` words,
   else at the window's first word. Fewer than `MIN_WORDS` words: no passage.
3. As in LAMBADA, whose passages were kept only when the last word is guessable from the whole
   passage, the target word must occur earlier in the passage (case-insensitive, whole word), so
   the passage holds the evidence for it.
4. Context = the document text from the passage's first word up to the target, trailing whitespace
   removed; continuation = " " + target word (the sentence's final punctuation is dropped).
   Passages from one document do not overlap; the next search starts after the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_WORDS = 40
MAX_WORDS = 120
ENGLISH_DOMAINS = ("web", "books", "academic")

_WORD = re.compile(r"\S+")
_TARGET = re.compile(r"([A-Za-z]{3,})[.!?]+[\"'\u201d\u2019)\]]*\Z")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\Z")


@dataclass(frozen=True)
class ClozeItem:
    domain: str
    document: int  # index of the text in its domain's list
    context: str
    target: str  # " " + the last word

    @property
    def key(self) -> str:
        return f"{self.domain}\x1f{self.context}\x1f{self.target}"


def extract_passages(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[tuple[str, str]]:
    """(context, " " + target word) pairs cut from `text` by the rule in the module docstring."""
    words = list(_WORD.finditer(text))
    passages: list[tuple[str, str]] = []
    floor = 0  # first word a new passage may use
    for i, word in enumerate(words):
        match = _TARGET.match(word.group())
        if match is None:
            continue
        first = max(floor, i - (max_words - 1))
        if i - first + 1 < min_words:
            continue
        begin = first
        for j in range(first, i - min_words + 2):
            if j == 0 or _SENTENCE_END.search(words[j - 1].group()):
                begin = j
                break
        target = match.group(1)
        context = text[words[begin].start() : word.start()].rstrip()
        if not re.search(rf"\b{re.escape(target)}\b", context, re.IGNORECASE):
            continue
        passages.append((context, " " + target))
        floor = i + 1
    return passages


def cloze_items(texts: dict[str, list[str]], domains: tuple[str, ...] = ENGLISH_DOMAINS) -> list[ClozeItem]:
    """Every passage of every held-out document of the English `domains`, in domain then document order."""
    items: list[ClozeItem] = []
    for domain in domains:
        for index, text in enumerate(texts.get(domain, [])):
            items.extend(ClozeItem(domain, index, context, target) for context, target in extract_passages(text))
    return items
