"""The evaluation run of the walking pipeline: held-out perplexity per domain and toxicity of
sampled generations, written as `metrics.json` (one entry per metric with the fields needed to
reproduce it) and a Markdown table. The full 50+ metric suite of a later issue extends `METRICS`."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch

import pharia
from pharia.config import EvalConfig
from pharia.data.manifest import atomic_write_json, sha256_file
from pharia.data.tokenizer import load_tokenizer
from pharia.evaluate.heldout import heldout_metrics
from pharia.evaluate.toxicity_probe import toxicity_of_generations

HARNESS = f"pharia-eval/{pharia.__version__}"
BATCH_SIZE = 8


def _hardware() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    return f"{device}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def evaluate(model_dir: Path, shards_dir: Path, tokenizer_file: Path, cfg: EvalConfig, out_dir: Path) -> dict:
    """Score the model in `model_dir`; returns {"metrics": {name: value}, "entries": [...], ...}."""

    from pharia.model.io import load_pretrained

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, model_cfg = load_pretrained(model_dir)
    model.eval()
    manifest = json.loads((shards_dir / "manifest.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(tokenizer_file)  # special-token strings in prompts stay text
    seq_len = min(int(manifest["seq_len"]), model_cfg.max_seq_len)

    heldout = heldout_metrics(model, shards_dir, seq_len, cfg.max_batches_per_domain, BATCH_SIZE)
    toxicity = toxicity_of_generations(
        model,
        tokenizer,
        n=cfg.n_generations,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        threshold=cfg.toxicity_threshold,
        seed=cfg.seed,
        eos_token_id=int(manifest["eos_token_id"]),
        pad_token_id=int(manifest["pad_token_id"]),
    )

    repro = {
        "seed": cfg.seed,
        "batch_size": BATCH_SIZE,
        "harness": HARNESS,
        "hardware": _hardware(),
        "model_sha256": sha256_file(model_dir / "model.safetensors"),
        "shards_manifest_sha256": sha256_file(shards_dir / "manifest.json"),
    }
    entries: list[dict] = []

    def add(name: str, category: str, value: float, n: int, description: str, **extra: str) -> None:
        entries.append(
            {"name": name, "category": category, "value": value, "n": n, "description": description, **repro, **extra}
        )

    for domain, scores in heldout.items():
        add(
            f"eval_ppl_{domain}",
            "language_modelling",
            scores["perplexity"],
            int(scores["tokens"]),
            f"perplexity on fixed held-out windows of the {domain} domain",
        )
    total_tokens = sum(s["tokens"] for s in heldout.values())
    overall_nll = sum(s["nll"] * s["tokens"] for s in heldout.values()) / max(total_tokens, 1)
    add(
        "eval_ppl_overall",
        "language_modelling",
        math.exp(overall_nll),
        int(total_tokens),
        "token-weighted perplexity over all held-out domains",
    )
    add(
        "eval_ppl_worst_domain",
        "language_modelling",
        max(s["perplexity"] for s in heldout.values()),
        int(total_tokens),
        "perplexity of the worst held-out domain (the gate's input)",
    )
    tox_extra = {"dataset_sha256": toxicity.dataset_sha256, "classifier": toxicity.classifier}
    add(
        "eval_toxicity_rate",
        "toxicity",
        toxicity.rate,
        toxicity.n,
        f"share of continuations of RealToxicityPrompts-challenging prompts scoring > {cfg.toxicity_threshold}",
        **tox_extra,
    )
    add("eval_toxicity_mean", "toxicity", toxicity.mean, toxicity.n, "mean toxicity of the continuations", **tox_extra)
    add(
        "eval_toxicity_max",
        "toxicity",
        toxicity.max,
        toxicity.n,
        "maximum toxicity over the continuations",
        **tox_extra,
    )

    result = {
        "schema": "pharia.eval/v1",
        "metrics": {e["name"]: e["value"] for e in entries},
        "entries": entries,
        "reproducibility": repro,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "generations.jsonl").open("w", encoding="utf-8") as fh:
        for sample in toxicity.samples:
            fh.write(json.dumps(sample, ensure_ascii=False) + "\n")
    (out_dir / "summary.md").write_text(render_markdown(entries), encoding="utf-8")
    atomic_write_json(out_dir / "metrics.json", result)
    return result


def render_markdown(entries: list[dict]) -> str:
    lines = ["| metric | category | value | n | what it measures |", "|---|---|---:|---:|---|"]
    for e in entries:
        lines.append(f"| {e['name']} | {e['category']} | {e['value']:.4g} | {e['n']} | {e['description']} |")
    return "# Evaluation\n\n" + "\n".join(lines) + "\n"
