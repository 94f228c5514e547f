"""Evaluation benchmark of `make bench`: batched log-likelihood scoring vs one request at a time.

Called by benchmarks/run.py with its interleaving and ratio machinery, reported in the JSON's
`eval_benchmarks` section. CPU, fp32, the preset's model shape with a seeded random initialisation
(speed does not depend on what the weights learned).

  loglikelihood  `PhariaEvalLM.loglikelihood` (the adapter every multiple-choice, cloze and pairwise
      bias task goes through) on HellaSwag-shaped requests: --eval-questions questions (default 64)
      of a ~60-token context with 4 continuations of 10-25 tokens each, i.e. 4 requests per question.
      Candidates differ only in the adapter's batch_size: 1 (baseline: one request per forward, no
      padding) vs 8 and 32 (length-sorted, right-padded batches). Metric: requests/s (and questions/s
      = requests/s / 4). Ratio: requests/s / batch-1 requests/s in the same round (higher is better).

Every candidate scores the same requests; the report records the largest log-likelihood difference
from the baseline (batching must not change a score beyond float rounding: < 1e-4).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

BATCH_SIZES = (1, 8, 32)  # baseline first
CHOICES = 4
CONTEXT_TOKENS = (50, 70)
CONTINUATION_TOKENS = (10, 25)
WORDS = (
    "the a man woman boy girl king queen market home river water boat crowd arena stands photographers "
    "pictures background he she they walked talked said told threw jumped ran stayed gone filtered toxic "
    "content before reaches training data is at and of to in on with over under quickly slowly rope ball"
).split()


def _text_of(tokenizer: Any, rng: random.Random, n_tokens: int) -> str:
    """Words drawn by `rng` until the text encodes to at least `n_tokens` tokens."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words)).ids) < n_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def hellaswag_like_requests(tokenizer: Any, questions: int, seed: int) -> list[tuple[str, str]]:
    """`questions` x 4 (context, " continuation") pairs, deterministic for a seed."""
    rng = random.Random(seed)
    requests: list[tuple[str, str]] = []
    for _ in range(questions):
        context = _text_of(tokenizer, rng, rng.randint(*CONTEXT_TOKENS))
        for _ in range(CHOICES):
            requests.append((context, " " + _text_of(tokenizer, rng, rng.randint(*CONTINUATION_TOKENS))))
    return requests


def run_eval_benchmarks(
    cfg: Any, shards_dir: Path, settings: Any, interleave: Any, summarise: Any, questions: int = 64, seed: int = 0
) -> dict[str, Any]:
    """The `loglikelihood` benchmark, shaped like run.py's benchmarks (baseline, metric, candidates)."""
    import torch

    from pharia.data.tokenizer import load_tokenizer
    from pharia.evaluate.adapters.pharia_lm import PhariaEvalLM
    from pharia.model.model import PhariaLM

    tokenizer = load_tokenizer(Path(shards_dir) / "tokenizer.json")
    torch.manual_seed(seed)
    model = PhariaLM(cfg.model).eval()
    requests = hellaswag_like_requests(tokenizer, questions, seed)
    lms = {
        f"batch_{b}": PhariaEvalLM(model, tokenizer, eos_token_id=0, pad_token_id=1, batch_size=b) for b in BATCH_SIZES
    }
    scores: dict[str, list[float]] = {}

    def candidate(name: str) -> Any:
        def run(_: int) -> float:
            scores[name] = [s.logprob for s in lms[name].loglikelihood(requests)]
            return float(len(requests))

        return run

    # at most 8 rounds of one full pass each: the ratio is stable and `make bench` stays short
    rounds = min(settings.rounds, 8)
    series = interleave({name: candidate(name) for name in lms}, rounds, 1, 1)
    baseline = f"batch_{BATCH_SIZES[0]}"
    work = {name: float(len(requests)) for name in lms}
    candidates = summarise(series, baseline, "tokens_per_s", work)  # work/second: here requests/s
    lengths = [len(tokenizer.encode(c + x).ids) for c, x in requests]
    for name, result in candidates.items():
        result["questions_per_s"] = result["median"] / CHOICES
        result["max_logprob_diff_vs_baseline"] = max(
            abs(a - b) for a, b in zip(scores[name], scores[baseline], strict=True)
        )
    return {
        "loglikelihood": {
            "description": (
                "PhariaEvalLM.loglikelihood on HellaSwag-shaped requests (~60-token context, 4 continuations): "
                "batch_size 8 / 32 vs 1"
            ),
            "metric": "requests_per_s",
            "better": "higher",
            "baseline": baseline,
            "ratio_definition": "median over rounds of candidate requests/s / baseline requests/s in the same round",
            "shape": {
                "model": cfg.model.model_dump(mode="json"),
                "questions": questions,
                "requests": len(requests),
                "tokens_per_request_mean": sum(lengths) / len(lengths),
                "tokens_per_request_max": max(lengths),
                "torch_threads": torch.get_num_threads(),
            },
            "candidates": candidates,
        }
    }


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="pharia evaluation benchmarks",
        caption="* baseline. ratio: median over interleaved rounds of the per-round ratio; range: lowest-highest round",
    )
    for column in ("benchmark", "candidate", "requests/s", "questions/s", "ratio", "range", "max |diff|"):
        table.add_column(column, justify="left" if column in ("benchmark", "candidate") else "right", no_wrap=True)
    for bench_name, bench in results.items():
        for i, (name, c) in enumerate(bench["candidates"].items()):
            table.add_row(
                bench_name if i == 0 else "",
                f"{name}*" if name == bench["baseline"] else name,
                f"{c['median']:.1f}",
                f"{c['questions_per_s']:.1f}",
                f"{c['ratio']:.2f}x",
                f"{c['ratio_min']:.2f}-{c['ratio_max']:.2f}",
                f"{c['max_logprob_diff_vs_baseline']:.1e}",
            )
        table.add_section()
    Console().print(table)
