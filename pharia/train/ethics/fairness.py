"""Counterfactual fairness regulariser: counterfactual logit pairing on sequence likelihoods.

A window that mentions a demographic term ("he", "his", "mother", ...) is paired with a copy in
which every such term is swapped for its counterpart ("she", "her", "father", ...), in inputs and
targets. One extra forward scores the copies; the penalty is

    coef * mean over paired windows of |NLL(window) - NLL(counterfactual window)|

with NLL the window's mean per-token negative log-likelihood. It pushes the model to find a text
exactly as likely whichever gender (or religion) it mentions, the sequence-level form of Garg et
al. 2019's counterfactual logit pairing, and the training-time counterpart of Huang et al. 2020's
counterfactual sentiment evaluation; Qian et al. 2019 regularise the same gender pairs through the
output distribution.

Swaps are token-level, so only pairs where both words are one token of this tokenizer are used
(`usable_pairs`); a word form is swapped only where its token is a whole word (not the "he" of
"Shell" or the " her" of " herald" when BPE splits those rare words into pieces). The swap is a
bijection of token ids that preserves the whole-word context, hence an involution: swapping twice
gives the window back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pharia.config import FairnessConfig
from pharia.model.model import IGNORE_INDEX, ModelOutput

# Gender: the binary word pairs of counterfactual data augmentation (Lu et al. 2018).
# "her" is both the object ("saw her") and the possessive ("her book"); a token swap must be a
# bijection to be an involution, so "her" pairs with the more frequent "his" and "him"/"hers" are left
# unswapped. Title pairs are cased by the surface forms below ("mr" -> " Mr").
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"),
    ("his", "her"),
    ("himself", "herself"),
    ("man", "woman"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("father", "mother"),
    ("fathers", "mothers"),
    ("dad", "mom"),
    ("son", "daughter"),
    ("sons", "daughters"),
    ("brother", "sister"),
    ("brothers", "sisters"),
    ("husband", "wife"),
    ("husbands", "wives"),
    ("uncle", "aunt"),
    ("nephew", "niece"),
    ("grandfather", "grandmother"),
    ("grandson", "granddaughter"),
    ("boyfriend", "girlfriend"),
    ("gentleman", "lady"),
    ("gentlemen", "ladies"),
    ("king", "queen"),
    ("prince", "princess"),
    ("male", "female"),
    ("males", "females"),
    ("mr", "mrs"),
    ("sir", "madam"),
)
# Religion: adherents, places of worship and scriptures of the two largest religions, a swap that
# keeps sentences grammatical and meaningful ("the imam of the mosque" <-> "the priest of the church").
# Age is deliberately absent: "young"/"old" describe code, wine and versions as often as people, so the
# swap would change meaning rather than identity; age counterfactuals need rewriting in context.
RELIGION_PAIRS: tuple[tuple[str, str], ...] = (
    ("christian", "muslim"),
    ("christians", "muslims"),
    ("christianity", "islam"),
    ("church", "mosque"),
    ("churches", "mosques"),
    ("bible", "quran"),
    ("priest", "imam"),
)
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = GENDER_PAIRS + RELIGION_PAIRS


def surface_forms(word: str) -> list[str]:
    """The spellings a byte-level BPE sees: with the leading space of a word inside a sentence and
    without it (window or line start), each as given, lower case and capitalised; order kept, no repeats."""
    cases = dict.fromkeys([word, word.lower(), word[:1].upper() + word[1:].lower()])
    return [prefix + case for prefix in (" ", "") for case in cases]


class FairnessTerm:
    """`term(forward, inputs, targets, clean_logits)` -> (coef * mean |NLL gap| with graph, counters),
    or (None, counters) when no window of the micro-batch mentions a usable term.

    Counters: `fair_windows_paired` (counterfactual windows scored, at most `max_windows`),
    `fair_usable_pairs` (word pairs with at least one single-token spelling on both sides), and, only
    when a window was paired (so averages are not diluted by micro-batches without terms),
    `fair_gap` (mean absolute NLL gap, unweighted) and `fair_penalty` (coef * fair_gap).
    """

    def __init__(self, cfg: FairnessConfig, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        self.cfg = cfg
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        texts = tokenizer.decode_batch([[i] for i in range(vocab)], skip_special_tokens=True)
        # whole-word context: a token that starts with a word character glues onto a preceding one
        # that ends with one (no space between), e.g. "S" + "he" in a split "Shell"
        self.starts_word = torch.tensor([bool(t) and t[0].isalnum() for t in texts], dtype=torch.bool)
        self.ends_word = torch.tensor([bool(t) and t[-1].isalnum() for t in texts], dtype=torch.bool)
        self.table = torch.arange(vocab)
        self.pairs_used: list[tuple[str, str]] = []
        self.token_pairs: list[tuple[int, int]] = []
        for left, right in cfg.pairs if cfg.pairs is not None else DEFAULT_PAIRS:
            found = self._add_pair(tokenizer, left, right)
            if found:
                self.pairs_used.append((left, right))
                self.token_pairs.extend(found)
        self.is_term = self.table != torch.arange(vocab)

    def _add_pair(self, tokenizer: Any, left: str, right: str) -> list[tuple[int, int]]:
        """Add every spelling of (left, right) where both sides are single tokens not used by an earlier
        pair and with the same whole-word context on both sides (so the swap stays an involution)."""
        added: list[tuple[int, int]] = []
        for a_text, b_text in zip(surface_forms(left), surface_forms(right), strict=True):
            a_ids = tokenizer.encode(a_text, add_special_tokens=False).ids
            b_ids = tokenizer.encode(b_text, add_special_tokens=False).ids
            if len(a_ids) != 1 or len(b_ids) != 1:
                continue
            a, b = a_ids[0], b_ids[0]
            if a == b or self.table[a] != a or self.table[b] != b:
                continue
            if self.starts_word[a] != self.starts_word[b] or self.ends_word[a] != self.ends_word[b]:
                continue
            self.table[a], self.table[b] = b, a
            added.append((a, b))
        return added

    @property
    def usable_pairs(self) -> int:
        """Word pairs this tokenizer can swap (at least one spelling is one token on both sides)."""
        return len(self.pairs_used)

    # ------------------------------------------------------------------------------- swapping
    def swap_masks(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where inputs / targets hold a swappable whole-word term. The token before targets[t] is
        inputs[t] and the one after inputs[t] is targets[t] (or inputs[t+1] where the target is ignored),
        which holds for any causal LM batch; an unknown neighbour counts as a word boundary."""
        unknown = torch.full_like(inputs[:, :1], -1)
        in_prev = torch.cat([unknown, inputs[:, :-1]], dim=1)
        in_next = torch.cat([inputs[:, 1:], unknown], dim=1)
        in_next = torch.where(targets != IGNORE_INDEX, targets, in_next)
        tg_next = torch.cat([targets[:, 1:], unknown], dim=1)
        in_mask = self._whole_term(inputs, in_prev, in_next)
        tg_mask = self._whole_term(targets, inputs, tg_next)
        return in_mask, tg_mask

    def _whole_term(self, ids: torch.Tensor, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        def look(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            valid = (x >= 0) & (x < table.numel())
            return table.to(x.device)[x.clamp(0, table.numel() - 1)] & valid

        glued = (look(self.ends_word, ids) & look(self.starts_word, nxt)) | (
            look(self.ends_word, prev) & look(self.starts_word, ids)
        )
        return look(self.is_term, ids) & ~glued

    def swap(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The counterfactual copy: every whole-word term swapped for its counterpart."""
        in_mask, tg_mask = self.swap_masks(inputs, targets)
        table = self.table.to(inputs.device)
        cf_inputs = torch.where(in_mask, table[inputs.clamp(0, table.numel() - 1)], inputs)
        cf_targets = torch.where(tg_mask, table[targets.clamp(0, table.numel() - 1)], targets)
        return cf_inputs, cf_targets

    # ---------------------------------------------------------------------------------- term
    def __call__(
        self,
        forward: Callable[..., ModelOutput],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        clean_logits: torch.Tensor,
        lockstep: bool = False,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The weighted likelihood-gap penalty (with its graph) and counters; None without a paired
        window, unless `lockstep` (ZeRO-3 with several ranks) asks for the extra forward on every rank."""
        if clean_logits.shape[:2] != inputs.shape:
            raise ValueError(f"clean_logits {tuple(clean_logits.shape)} do not match inputs {tuple(inputs.shape)}")
        in_mask, tg_mask = self.swap_masks(inputs, targets)
        scored = (targets != IGNORE_INDEX).any(dim=1)
        rows = ((in_mask | tg_mask).any(dim=1) & scored).nonzero().flatten()[: self.cfg.max_windows]
        counters: dict[str, float] = {
            "fair_windows_paired": float(rows.numel()),
            "fair_usable_pairs": float(self.usable_pairs),
        }
        if rows.numel() == 0:
            if not lockstep:
                return None, counters
            # ZeRO-3 on several ranks: every forward gathers parameters from all ranks, so a rank
            # without a paired window still runs one (on its first row) and adds it times zero
            dummy = forward(inputs[:1], targets[:1]).logits
            return dummy.float().sum() * 0.0, counters
        orig_inputs, orig_targets = inputs.index_select(0, rows), targets.index_select(0, rows)
        cf_inputs, cf_targets = self.swap(orig_inputs, orig_targets)
        cf_logits = forward(cf_inputs, cf_targets).logits
        gaps = (window_nll(clean_logits.index_select(0, rows), orig_targets) - window_nll(cf_logits, cf_targets)).abs()
        gap = gaps.mean()
        penalty = self.cfg.coef * gap
        counters["fair_gap"] = float(gap.detach())
        counters["fair_penalty"] = float(penalty.detach())
        return penalty, counters


def window_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of each window's scored targets, (B,); fp32 like the model's loss."""
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).reshape(targets.shape)
    return per_token.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
