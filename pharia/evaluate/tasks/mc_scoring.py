"""Zero-shot multiple-choice scoring by log-likelihood, and calibration.

Every option of every question is one (context, continuation) request; all requests of a chunk of
questions go to the model in one `loglikelihood` call (the adapter batches them), so progress can be
reported without scoring question by question. The choice rules follow lm-evaluation-harness:
`acc` takes the option with the highest summed log-probability, `acc_norm` divides each option's
log-probability by the UTF-8 byte length of its continuation first (lm-eval divides by characters;
bytes and characters differ only for non-ASCII options). Ties go to the first option (numpy argmax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pharia.evaluate.lm import EvalLM

CHUNK_QUESTIONS = 64  # questions per loglikelihood call: progress granularity, not a batch size


@dataclass(frozen=True)
class ChoiceScore:
    """One question scored: summed log-probabilities per option, the two predictions, and the
    softmax probability of the `acc` prediction (its confidence, for calibration)."""

    logprobs: tuple[float, ...]
    pred: int
    pred_norm: int
    confidence: float


def choice_score(logprobs: Sequence[float], continuations: Sequence[str]) -> ChoiceScore:
    values = np.asarray(logprobs, dtype=np.float64)
    lengths = np.asarray([max(len(c.encode("utf-8")), 1) for c in continuations], dtype=np.float64)
    pred = int(np.argmax(values))
    shifted = np.exp(values - values.max())
    probs = shifted / shifted.sum()
    return ChoiceScore(
        logprobs=tuple(float(v) for v in values),
        pred=pred,
        pred_norm=int(np.argmax(values / lengths)),
        confidence=float(probs[pred]),
    )


def score_choices(
    lm: EvalLM,
    questions: Sequence[list[tuple[str, str]]],
    progress: Callable[[int], None] = lambda n: None,
) -> list[ChoiceScore]:
    """`questions[i]` = the (context, continuation) requests of question i's options, in option order."""
    scores: list[ChoiceScore] = []
    for start in range(0, len(questions), CHUNK_QUESTIONS):
        chunk = questions[start : start + CHUNK_QUESTIONS]
        flat = [request for question in chunk for request in question]
        results = lm.loglikelihood(flat)
        if len(results) != len(flat):
            raise RuntimeError(f"the model returned {len(results)} scores for {len(flat)} requests")
        offset = 0
        for question in chunk:
            scored = results[offset : offset + len(question)]
            offset += len(question)
            scores.append(choice_score([s.logprob for s in scored], [c for _, c in question]))
        progress(len(chunk))
    return scores


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE = sum over bins b of |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|, with `bins`
    equal-width bins (b/bins, (b+1)/bins] over [0, 1] (a confidence of exactly 0 joins the first
    bin); empty bins contribute nothing (Guo et al. 2017). NaN when a confidence is not finite (a
    model that produced non-finite scores), which the suite reports as not computed."""
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or conf.shape != hits.shape:
        raise ValueError(f"confidences and correct must be two lists of one length ({conf.shape} vs {hits.shape})")
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one prediction")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not np.all(np.isfinite(conf)):
        return float("nan")  # a non-finite score upstream: reported as not computed, never as calibrated
    if not np.all((conf >= 0.0) & (conf <= 1.0)):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges, right=True) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            ece += members.mean() * abs(hits[members].mean() - conf[members].mean())
    return float(ece)
