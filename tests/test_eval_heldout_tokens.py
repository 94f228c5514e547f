"""Token-level held-out perplexity (pharia.evaluate.heldout) on hand-made models with known answers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from conftest_train import write_shards
from tokenizers import Tokenizer, models, pre_tokenizers

from pharia.evaluate.heldout import heldout_metrics

VOCAB = {"<|endoftext|>": 0, "<|pad|>": 1, "idiot": 2, "friendly": 3, "[UNK]": 4}


class Out(NamedTuple):
    logits: torch.Tensor


class ScriptedLM(torch.nn.Module):
    """Always puts (almost) all probability on one token id; uniform when `token` is None."""

    def __init__(self, vocab_size: int, token: int | None = None, max_seq_len: int = 64) -> None:
        super().__init__()
        self.vocab_size, self.token = vocab_size, token
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(max_seq_len=max_seq_len)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Out:
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        if self.token is not None:
            logits[..., self.token] = 50.0
        return Out(logits)


def _word_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_uniform_model_has_perplexity_equal_to_vocab_size(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "s", vocab_size=512, heldout_tokens={"web": 2000, "code": 300})
    scores = heldout_metrics(ScriptedLM(512), shards, seq_len=32, max_batches=4)
    assert set(scores) == {"web", "code"}
    for domain in scores.values():
        assert domain["perplexity"] == pytest.approx(512, rel=1e-5)
        assert domain["bits_per_token"] == pytest.approx(math.log2(512), rel=1e-5)
    assert scores["web"]["tokens"] == 4 * 8 * 32  # max_batches bounds the tokens scored
    assert scores["code"]["tokens"] == 299  # every held-out token after the first, the partial window too


def test_confident_wrong_model_scores_worse_than_uniform(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "s", vocab_size=512)
    wrong = heldout_metrics(ScriptedLM(512, token=1), shards, seq_len=32, max_batches=2)  # pad never appears
    assert all(d["perplexity"] > 1e6 for d in wrong.values())
