"""`make bench`: pharia's benchmarks, each reported as a ratio against a baseline measured in the same run.

This machine is noisy (shared cores, frequency scaling), so absolute times say little from one run to
the next. Every benchmark therefore runs its candidates side by side in one process: interleaved in
rounds (A B C, then C B A, ...), each candidate runs a few steps per round, a round's value is the
median of its steps, and a candidate's ratio is the median over rounds of (its round value / the
baseline's value in the same round). Absolute medians are recorded too, for context only.

Benchmarks (all on the model shape of a preset, tiny by default; fp32, CPU):

  train_step               one optimizer step under DeepSpeed ZeRO-0/2/3 (gloo, world size 1, set up
                           by the trainer's own helpers) vs a bare PyTorch AdamW loop; same weights,
                           same batches. Ratio: step ms / bare step ms (lower is better).
  activation_checkpointing bare PyTorch step with activation checkpointing on vs off.
                           Ratio: step ms / off step ms (the price of recomputation).
  heldout_eval             pharia.evaluate.heldout.heldout_metrics on synthetic shards at batch size 8
                           vs 1, same windows. Ratio: tokens/s / batch-1 tokens/s (higher is better).
  model (section `model_benchmarks`, see benchmarks/model_bench.py): forward+backward of dynamic sparse
                           vs dense attention at T = 512/1024/2048, and MoE vs dense MLP at equal
                           active parameters. Ratio: step ms / dense step ms. Skipped with --only.
  eval (section `eval_benchmarks`, see benchmarks/eval_bench.py): PhariaEvalLM.loglikelihood on 256
                           HellaSwag-shaped requests at batch size 8 and 32 vs 1 (one request per
                           forward). Ratio: requests/s / batch-1 requests/s (higher is better). With
                           --only, only when `eval` is named.
  data (section `data_benchmarks`, see benchmarks/data_bench.py): a synthetic corpus of --data-gb GB
                           (default 2) streamed to disk, ingested in a child process at that size and
                           at --data-small-fraction of it: peak RSS of both (flat = bounded memory),
                           documents/s vs a bare json.loads baseline, each ingest stage's docs/s; and
                           tokens/s of pharia's packer vs tokenizers encode_batch alone. Runs last;
                           with --only, only when `data` is named. Needs ~2.2x --data-gb of free disk.

Candidates of one benchmark do the same work, and the report shows it: training candidates start from
the same weights and see the same batches and LR schedule, so their losses agree (max difference
recorded); both eval batch sizes score the same windows (max NLL difference recorded). ZeRO-3's
process-wide replacement of torch.nn.functional.linear is confined to the ZeRO-3 candidate's steps.
The report also records how many CPUs other processes used meanwhile, and the table warns when that
was noticeable.

Writes a JSON report (default benchmarks/results/latest.json) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import data_bench  # noqa: E402 - a sibling script, importable once its folder is on the path

DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
SCHEMA = "pharia.bench/v1"
BENCHMARKS = ("train_step", "activation_checkpointing", "heldout_eval")
DATA = "data"  # the data section's name for --only
EVAL = "eval"  # the evaluation section's name for --only
HELDOUT_DOMAINS = ("code", "web")
EVAL_BATCH_SIZES = (1, 8)  # baseline first
OTHERS_CPU_NOTE = 0.25  # CPUs used by other processes, on average, above which the run is flagged as noisy


@dataclass(frozen=True)
class Settings:
    """How much of each benchmark to run; `--quick` and the full run differ only here."""

    profile: str
    rounds: int  # interleaved rounds per benchmark
    steps: int  # training steps per candidate per round
    warmup: int  # untimed training steps per candidate before the first round
    eval_repeats: int  # heldout_metrics calls per candidate per round
    eval_windows: int  # held-out windows per domain (a multiple of the largest eval batch size)


PROFILES = {
    # many short rounds rather than few long ones: a burst of load from elsewhere then spoils one
    # round's ratio, which the median over rounds discards, instead of one candidate's whole sample
    "full": Settings(profile="full", rounds=16, steps=3, warmup=2, eval_repeats=1, eval_windows=32),
    "quick": Settings(profile="quick", rounds=4, steps=2, warmup=1, eval_repeats=1, eval_windows=16),
}


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    full, quick = PROFILES["full"], PROFILES["quick"]
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Ratios are medians over interleaved rounds of per-round ratios; the JSON also records the\n"
            "lowest and highest per-round ratio, so a noisy run shows itself. Absolute times depend on the\n"
            "machine and its load: compare ratios, and only between runs on the same kind of machine."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"short smoke run (~30 s): {quick.rounds} rounds of {quick.steps} steps, {quick.eval_windows} "
        f"held-out windows per domain (full run: {full.rounds} rounds of {full.steps} steps, "
        f"{full.eval_windows} windows)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON report to write (default: benchmarks/results/latest.json); its folder is created",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=(*BENCHMARKS, DATA, EVAL),
        metavar="NAME",
        help=f"run only this benchmark (repeatable; one of {', '.join((*BENCHMARKS, DATA, EVAL))}); default: all",
    )
    parser.add_argument(
        "--config",
        default="tiny",
        help="preset name or YAML file whose model/train sections (and data.seq_len) give the shape (default: tiny)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per benchmark (overrides the profile)")
    parser.add_argument("--steps", type=int, help="timed training steps per candidate per round (overrides)")
    parser.add_argument("--warmup", type=int, help="untimed training steps per candidate first (overrides)")
    parser.add_argument("--eval-repeats", type=int, help="heldout_metrics calls per candidate per round (overrides)")
    parser.add_argument(
        "--eval-windows",
        type=int,
        help=f"held-out windows of seq_len tokens per domain, a multiple of {max(EVAL_BATCH_SIZES)} (overrides)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's own choice, recorded in the report)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights and batches, and of the data corpus (default: 0)"
    )
    data_bench.add_arguments(parser)
    args = parser.parse_args(argv)
    data_bench.check_arguments(parser, args)
    for name in ("rounds", "steps", "eval_repeats", "eval_windows", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.eval_windows is not None and args.eval_windows % max(EVAL_BATCH_SIZES):
        parser.error(f"--eval-windows must be a multiple of {max(EVAL_BATCH_SIZES)}, got {args.eval_windows}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    base = PROFILES["quick" if args.quick else "full"]
    overrides = {
        name: getattr(args, name)
        for name in ("rounds", "steps", "warmup", "eval_repeats", "eval_windows")
        if getattr(args, name) is not None
    }
    if overrides:
        base = Settings(**{**asdict(base), **overrides, "profile": f"{base.profile}+overrides"})
    return base


# ----------------------------------------------------------------------------- environment
def prepare_environment() -> None:
    """What `pharia train` does before DeepSpeed is imported: the workspace's environment, the CPU
    accelerator, and the single-process distributed environment (world size 1)."""
    from pharia import environment
    from pharia.train.cli import single_process_env
    from pharia.train.loop import quiet_deepspeed_logs

    os.environ["DS_ACCELERATOR"] = "cpu"  # read once by DeepSpeed, at import
    environment.configure()
    os.environ.update(single_process_env())
    quiet_deepspeed_logs()  # also drops the expected "scheduler before it has started" warning


def machine_info() -> dict[str, Any]:
    """data_bench's machine description (cores, memory, platform, load) plus the torch threading."""
    import numpy
    import torch

    info = data_bench.machine_info()
    info.update(
        {
            "cpu_model": _cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        }
    )
    try:
        from importlib.metadata import version

        info["deepspeed"] = version("deepspeed")
    except Exception:  # versions are context, never a reason to fail
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------ measuring
Step = Callable[[int], float]  # runs unit i (the same i means the same work for every candidate); returns a value


@dataclass
class Series:
    """Seconds per unit of one candidate, grouped by round, and the values its units returned."""

    seconds: list[list[float]]
    values: list[float]


def interleave(candidates: dict[str, Step], rounds: int, per_round: int, warmup: int) -> dict[str, Series]:
    """Run `candidates` side by side: `warmup` untimed units each, then `rounds` rounds in which every
    candidate runs `per_round` timed units, the order reversed every other round so no candidate
    always follows the same neighbour. Unit i is the same work (batch, windows) for every candidate."""
    names = list(candidates)
    series = {name: Series(seconds=[], values=[]) for name in names}
    for name in names:
        for i in range(warmup):
            series[name].values.append(candidates[name](i))
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            times: list[float] = []
            for k in range(per_round):
                i = warmup + r * per_round + k
                started = time.perf_counter()
                value = candidates[name](i)
                times.append(time.perf_counter() - started)
                series[name].values.append(value)
            series[name].seconds.append(times)
    return series


def summarise(
    series: dict[str, Series], baseline: str, metric: str, work_per_unit: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Per candidate: median of the metric over all units, per-round medians, and the ratio to the
    baseline: median over rounds of (candidate round median / baseline round median), with its range.

    `metric` is "step_ms" (milliseconds per unit) or "tokens_per_s" (work_per_unit[name] / seconds)."""

    def value(name: str, seconds: float) -> float:
        if metric == "step_ms":
            return seconds * 1000.0
        assert work_per_unit is not None
        return work_per_unit[name] / seconds

    rounds = {
        name: [statistics.median(value(name, s) for s in times) for times in data.seconds]
        for name, data in series.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for name, data in series.items():
        ratios = [c / b for c, b in zip(rounds[name], rounds[baseline], strict=True)]
        out[name] = {
            "median": statistics.median(value(name, s) for times in data.seconds for s in times),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "samples": sum(len(times) for times in data.seconds),
            "round_medians": rounds[name],
        }
    return out


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


# ------------------------------------------------------------------------------ fixtures
def write_synthetic_shards(root: Path, vocab_size: int, seq_len: int, eval_windows: int, seed: int) -> Path:
    """Learnable synthetic token shards in the data stage's layout, written by the tests' own helper
    (tests/conftest_train.py) so the benchmark and the tests share one definition of the format."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from conftest_train import write_shards
    finally:
        sys.path.remove(str(REPO / "tests"))
    heldout = eval_windows * seq_len + 1  # exactly eval_windows full windows per domain
    return write_shards(
        root,
        vocab_size=vocab_size,
        seq_len=seq_len,
        train_tokens={"web": 40_000, "code": 20_000},
        heldout_tokens=dict.fromkeys(HELDOUT_DOMAINS, heldout),
        seed=seed,
    )


def fixed_batches(shards_dir: Path, cfg: Any, count: int) -> list[tuple[Any, Any]]:
    """The first `count` batches the trainer's sampler would draw: every candidate trains on these."""
    from pharia.train.data import MixtureBatches, ShardSet

    shards = ShardSet.open(shards_dir, vocab_size=cfg.model.vocab_size)
    batches = MixtureBatches(shards, split="train", seq_len=cfg.data.seq_len, seed=[cfg.train.seed, 0])
    return [batches.global_batch(step, cfg.train.micro_batch_size) for step in range(1, count + 1)]


def fresh_model(cfg: Any, checkpointing: bool = False) -> Any:
    """The preset's model with the trainer's seeding: every candidate starts from identical weights."""
    from pharia.model.model import PhariaLM
    from pharia.train.loop import seed_everything

    seed_everything(cfg.train.seed)
    return PhariaLM(cfg.model).set_activation_checkpointing(checkpointing)


# ------------------------------------------------------------------------------ candidates
def bare_step(cfg: Any, batches: list[tuple[Any, Any]], checkpointing: bool = False) -> Step:
    """A plain PyTorch loop doing what the DeepSpeed engine does per step at world size 1: forward,
    backward, gradient clipping, torch AdamW on the trainer's parameter groups, the same LR schedule."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    from pharia.train.deepspeed_config import ADAM_EPS, SCHEDULE_FIRST_ITERATION, warmup_schedule
    from pharia.train.loop import optimizer_groups

    tcfg = cfg.train
    model = fresh_model(cfg, checkpointing)
    model.train()
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tcfg.betas, eps=ADAM_EPS
    )
    scheduler = WarmupCosineLR(optimizer, **warmup_schedule(tcfg.max_steps, tcfg.warmup_steps, tcfg.min_lr_ratio))
    scheduler.step(SCHEDULE_FIRST_ITERATION)

    def step(i: int) -> float:
        inputs, targets = batches[i]
        loss = model(inputs, targets).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return float(loss.detach())

    return step


def deepspeed_step(cfg: Any, batches: list[tuple[Any, Any]], zero_stage: int) -> Step:
    """An engine built exactly as `pharia.train.loop.train` builds it, at `zero_stage`.

    ZeRO-3 replaces `torch.nn.functional.linear` with its own autograd function process-wide, and
    on purpose keeps it replaced ("This will persist unless manually reset", DeepSpeed 0.19.8,
    `zero.Init(mem_efficient_linear=True)`, the default). Left in place, every candidate built or
    stepped after it would run ZeRO-3's linear instead of torch's (a bare tiny-model step measured
    ~2% slower with it), so the replacement is scoped to this engine's steps: installed for its
    forward/backward/step, the original put back in between.
    """
    import deepspeed
    import torch
    import torch.nn.functional as F

    from pharia.train.batch_size import plan_batches
    from pharia.train.deepspeed_config import SCHEDULE_FIRST_ITERATION, build_deepspeed_config
    from pharia.train.loop import optimizer_groups

    tcfg = cfg.train.model_copy(update={"zero_stage": zero_stage})
    plan = plan_batches(
        tcfg, cfg.model, cfg.data.seq_len, torch.distributed.get_world_size(), device=torch.device("cpu")
    )
    config = build_deepspeed_config(
        tcfg,
        plan,
        lr=tcfg.lr,
        warmup_steps=tcfg.warmup_steps,
        min_lr_ratio=tcfg.min_lr_ratio,
        total_steps=tcfg.max_steps,
    )
    model = fresh_model(cfg, tcfg.activation_checkpointing)
    original_linear = F.linear
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=optimizer_groups(model, tcfg.weight_decay), config=config
    )
    engine_linear = F.linear  # zero3_linear_wrap under ZeRO-3, unchanged otherwise
    F.linear = original_linear
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    engine.train()

    def step(i: int) -> float:
        inputs, targets = batches[i]
        F.linear = engine_linear
        try:
            loss = engine(inputs, targets).loss
            engine.backward(loss)
            engine.step()
        finally:
            F.linear = original_linear
        return float(loss.detach())

    return step


# ------------------------------------------------------------------------------ benchmarks
def shape_of(cfg: Any) -> dict[str, Any]:
    from pharia.model.model import build_model

    m = cfg.model
    return {
        "preset": cfg.name,
        "d_model": m.d_model,
        "n_layers": m.n_layers,
        "n_heads": m.n_heads,
        "vocab_size": m.vocab_size,
        "seq_len": cfg.data.seq_len,
        "micro_batch_size": cfg.train.micro_batch_size,
        "precision": cfg.train.precision,
        "params": build_model(m, "meta").num_parameters().unique,
    }


def bench_train_step(cfg: Any, shards_dir: Path, s: Settings) -> dict[str, Any]:
    import torch

    from pharia.train.loop import init_distributed

    init_distributed("cpu", 0)  # gloo; DeepSpeed's shm_comm op skipped as in the trainer
    assert torch.distributed.get_world_size() == 1
    batches = fixed_batches(shards_dir, cfg, s.warmup + s.rounds * s.steps)
    candidates: dict[str, Step] = {"bare": bare_step(cfg, batches, cfg.train.activation_checkpointing)}
    for stage in (0, 2, 3):
        candidates[f"zero{stage}"] = deepspeed_step(cfg, batches, stage)
    series = interleave(candidates, s.rounds, s.steps, s.warmup)
    result = _training_result(series, "bare", cfg)
    result["description"] = "optimizer step under DeepSpeed ZeRO-0/2/3 (gloo, world size 1) vs bare PyTorch AdamW"
    return result


def bench_activation_checkpointing(cfg: Any, shards_dir: Path, s: Settings) -> dict[str, Any]:
    batches = fixed_batches(shards_dir, cfg, s.warmup + s.rounds * s.steps)
    candidates = {"off": bare_step(cfg, batches, False), "on": bare_step(cfg, batches, True)}
    series = interleave(candidates, s.rounds, s.steps, s.warmup)
    result = _training_result(series, "off", cfg)
    result["description"] = "bare PyTorch optimizer step with activation checkpointing on vs off"
    return result


def _training_result(series: dict[str, Series], baseline: str, cfg: Any) -> dict[str, Any]:
    candidates = summarise(series, baseline, "step_ms")
    for name, data in series.items():
        # same weights, batches and schedule: the losses must agree, or the candidates did different work
        candidates[name]["final_loss"] = data.values[-1]
        candidates[name]["max_loss_diff_vs_baseline"] = max_abs_diff(data.values, series[baseline].values)
    return {
        "metric": "step_ms",
        "better": "lower",
        "baseline": baseline,
        "ratio_definition": "median over rounds of candidate step_ms / baseline step_ms in the same round",
        "shape": shape_of(cfg),
        "candidates": candidates,
    }


def bench_heldout_eval(cfg: Any, shards_dir: Path, s: Settings) -> dict[str, Any]:
    from pharia.evaluate.heldout import heldout_metrics

    model = fresh_model(cfg)
    scores: dict[str, dict[str, dict[str, float]]] = {}

    def candidate(batch_size: int) -> Step:
        def run(i: int) -> float:
            metrics = heldout_metrics(
                model, shards_dir, cfg.data.seq_len, max_batches=s.eval_windows // batch_size, batch_size=batch_size
            )
            scores[f"batch_{batch_size}"] = metrics
            return sum(m["tokens"] for m in metrics.values())

        return run

    candidates = {f"batch_{b}": candidate(b) for b in EVAL_BATCH_SIZES}
    series = interleave(candidates, s.rounds, s.eval_repeats, warmup=1)
    tokens = {name: data.values[-1] for name, data in series.items()}
    summary = summarise(series, f"batch_{EVAL_BATCH_SIZES[0]}", "tokens_per_s", tokens)
    base = scores[f"batch_{EVAL_BATCH_SIZES[0]}"]
    for name in summary:
        summary[name]["tokens_per_call"] = tokens[name]
        # batching must not change the numbers: same windows, same model
        summary[name]["max_nll_diff_vs_baseline"] = max(abs(scores[name][d]["nll"] - base[d]["nll"]) for d in base)
    return {
        "description": "pharia.evaluate.heldout.heldout_metrics at batch size 8 vs 1 on the same windows",
        "metric": "tokens_per_s",
        "better": "higher",
        "baseline": f"batch_{EVAL_BATCH_SIZES[0]}",
        "ratio_definition": "median over rounds of candidate tokens/s / baseline tokens/s in the same round",
        "shape": {**shape_of(cfg), "domains": list(HELDOUT_DOMAINS), "windows_per_domain": s.eval_windows},
        "candidates": summary,
    }


# ------------------------------------------------------------------------------ report
def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    machine = report["machine"]
    table = Table(
        title=f"pharia benchmarks - {report['settings']['profile']} run, {report['wall_s']:.0f} s",
        caption=(
            f"* baseline. ratio: median over interleaved rounds of the per-round ratio; range: lowest-highest "
            f"round. {machine['cpus_usable']} CPUs, {machine['torch_threads']} torch threads, torch "
            f"{machine['torch']}, deepspeed {machine.get('deepspeed', '?')}"
        ),
    )
    table.add_column("benchmark", no_wrap=True)
    table.add_column("candidate", no_wrap=True)
    table.add_column("median", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    table.add_column("range", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for bench_name, bench in report["benchmarks"].items():
        step = bench["metric"] == "step_ms"
        for i, (name, c) in enumerate(bench["candidates"].items()):
            table.add_row(
                bench_name if i == 0 else "",
                f"{name}*" if name == bench["baseline"] else name,
                f"{c['median']:.1f} ms" if step else f"{c['median'] / 1000:.1f}k tok/s",
                f"{c['ratio']:.2f}x",
                f"{c['ratio_min']:.2f}-{c['ratio_max']:.2f}",
                str(c["samples"]),
            )
        table.add_section()
    Console().print(table)


def busy_note(report: dict[str, Any]) -> str | None:
    """A warning when other processes took a noticeable share of the CPUs during a benchmark."""
    busy = {
        name: bench["others_cpu_per_wall"]
        for name, bench in report["benchmarks"].items()
        if (bench.get("others_cpu_per_wall") or 0.0) > OTHERS_CPU_NOTE
    }
    if not busy:
        return None
    detail = ", ".join(f"{name}: {value:.2f} CPUs" for name, value in busy.items())
    return (
        f"note: other processes were using the CPUs during the run ({detail} on average); interleaving keeps "
        "ratios fair only on average - see each ratio's range, or rerun on a quiet machine"
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    from pharia.train.outputs import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    selected = [b for b in BENCHMARKS if not args.only or b in args.only]
    started = time.perf_counter()
    prepare_environment()

    import torch

    from pharia.config import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "fp32", "device": "cpu"})})
    machine = machine_info()
    runners = {
        # pure-PyTorch benchmarks first: nothing DeepSpeed sets up can touch them
        "heldout_eval": bench_heldout_eval,
        "activation_checkpointing": bench_activation_checkpointing,
        "train_step": bench_train_step,
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pharia-bench-") as tmp:
        shards = write_synthetic_shards(
            Path(tmp) / "shards", cfg.model.vocab_size, cfg.data.seq_len, settings.eval_windows, args.seed
        )
        for name, runner in runners.items():
            if name not in selected:
                continue
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            t0, cpu0, busy0 = time.perf_counter(), time.process_time(), data_bench.machine_busy_s()
            results[name] = runner(cfg, shards, settings)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            busy1 = data_bench.machine_busy_s()
            results[name]["wall_s"] = wall
            results[name]["cpu_per_wall"] = cpu / wall  # CPUs this process kept busy, on average
            # CPUs that everything else kept busy meanwhile: the noise the interleaving has to absorb
            results[name]["others_cpu_per_wall"] = (
                max(0.0, (busy1 - busy0 - cpu) / wall) if busy0 is not None and busy1 is not None else None
            )
        model_results: dict[str, Any] = {}
        if not args.only:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from model_bench import run_model_benchmarks

            print("[bench] model (sparse attention, MoE) ...", file=sys.stderr, flush=True)
            model_results = run_model_benchmarks(settings, interleave, summarise)
        eval_results: dict[str, Any] = {}
        if not args.only or EVAL in args.only:
            from eval_bench import run_eval_benchmarks

            print("[bench] eval (batched log-likelihood scoring) ...", file=sys.stderr, flush=True)
            eval_results = run_eval_benchmarks(cfg, shards, settings, interleave, summarise, seed=args.seed)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    data_results: dict[str, Any] = {}
    if not args.only or DATA in args.only:
        # last: it starts child processes, and its tokenisation turns on the tokenizers thread pool,
        # after which a fork would have to disable it
        print("[bench] data (corpus, ingest memory and throughput, tokenisation) ...", file=sys.stderr, flush=True)
        data_results = data_bench.run_data_benchmarks(data_bench.settings_from(args, args.quick, args.seed))
    machine["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {**asdict(settings), "config": args.config, "seed": args.seed},
        "machine": machine,
        "wall_s": time.perf_counter() - started,
        "benchmarks": {name: results[name] for name in BENCHMARKS if name in results},
        "model_benchmarks": model_results,
        "eval_benchmarks": eval_results,
        "data_benchmarks": data_results,
    }
    bad = [
        f"{b}/{n}"
        for b, bench in {**report["benchmarks"], **model_results, **eval_results}.items()
        for n, c in bench["candidates"].items()
        if not (math.isfinite(c["median"]) and math.isfinite(c["ratio"]))
    ]
    if data_results:
        bad += [
            f"data/tokenize/{n}"
            for n, c in data_results["tokenize"]["candidates"].items()
            if not (math.isfinite(c["median"]) and math.isfinite(c["ratio"]))
        ]
    write_report(args.out, report)
    if report["benchmarks"]:
        print_table(report)
    if model_results:
        print_table({**report, "benchmarks": model_results})
    if eval_results:
        from eval_bench import print_table as print_eval_table

        print_eval_table(eval_results)
    if data_results:
        data_bench.print_table(data_results)
    busy = busy_note(report)
    if busy:
        print(busy, file=sys.stderr)
    print(f"report: {args.out}", file=sys.stderr)
    if bad:
        print(f"non-finite results: {', '.join(bad)}", file=sys.stderr)
        return 1
    if data_results and not data_results["accounting_ok"]:
        print("data: row accounting does not match the generated corpus (data_benchmarks.sizes.*)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
