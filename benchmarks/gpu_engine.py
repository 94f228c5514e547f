"""Tokens/s and MFU of the real training engine against a bare PyTorch loop, same model, batch and
precision, measured in one run (default: the `1b` preset on one CUDA GPU in bf16, e.g. an H100).

    python benchmarks/gpu_engine.py --out /tmp/gpu_engine.json
    python benchmarks/gpu_engine.py --device cpu --preset tiny --steps 4 --warmup-steps 1   # smoke run

Why: benchmarks/gpu_1b.py times a bare step of the model; what a user gets is `pharia train` -
DeepSpeed's ZeRO optimizer and bf16 wrapper, the resumable loader, per-step loss all-reduce and host
sync, grad-norm read-out, batched MLflow logging. This script measures both on the same machine in
the same invocation and reports the ratio, so the engine's overhead is a number, not a guess.

1. Synthetic shards in the real `pharia.shards/v1` layout (uniform random token ids, the preset's
   vocab_size and seq_len, a small byte-level BPE tokenizer.json) are written to a work directory.
2. Engine: `python -m pharia.train --config BENCH.yaml --shards ... --out ... --ranks 1
   --tracking-uri sqlite:///.../mlflow.db` as a subprocess. BENCH.yaml is the preset with one
   pretrain stage of W + N steps (W warmup, N = --steps), continuous and after-stage evaluation off,
   ethics terms off, no checkpoint before the last step, and the device / precision / ZeRO stage /
   micro-batch of the options. Everything else (log_every, activation checkpointing, batch) is the
   preset's. W is --warmup-steps rounded up to a multiple of the preset's log_every, so that a log
   window ends exactly at step W.
   Engine tokens/s = N · tokens_per_step / (time of the last log window's MLflow record − time of
   step W's record): wall-clock time of the last N steps of the real loop, its logging and MLflow
   flushes included, its warmup excluded (millisecond timestamps; windows are seconds long on a GPU).
   Also reported: the same N steps from the engine's own per-window `tokens_per_s` metric (step time
   only, the logging calls between windows excluded) and the stage summary's `tokens_per_s` (all
   W + N steps, warmup included). The final checkpoint is written after the last log record, so it
   is outside every measure; its approximate duration is reported separately.
3. Bare loop, in this process after the engine has exited: the same PhariaLM config, seed and
   initial weights (built on the CPU, as the engine does, then moved to the device), the
   engine's batch plan (micro-batch x gradient accumulation, read from its summary, so `auto` and
   an out-of-memory retry carry over), the preset's activation checkpointing, the MoE aux/z loss
   terms, loss / grad_accum per micro-batch as DeepSpeed scales it, gradient clipping at grad_clip
   and torch.optim.AdamW with its default implementation (what DeepSpeed builds for `torch_adam`).
   bf16 mirrors DeepSpeed bf16: parameters cast to bf16 (buffers stay fp32, as DeepSpeed keeps
   them), gradients accumulated in bf16, copied to fp32 master weights that AdamW updates and that
   are copied back to the bf16 parameters after each step. fp32 trains the fp32 parameters
   directly. Batches are uniform random ids generated on the device beforehand, so the loader, the
   host-to-device copy and the per-step host sync count as engine overhead. W untimed steps, then
   N timed steps between two device synchronisations.

MFU = tokens/s · flops_per_token / peak: flops_per_token from pharia.model.flops (what the engine
logs), peak from pharia.train.engine.PEAK_BF16_FLOPS by GPU name (--peak-tflops to override); null
on CPU and on unknown GPUs. The JSON holds machine info, both measurements, the ratio
engine/bare tokens/s, the derived config and the exact commands.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pharia.config import CONFIGS_DIR, PipelineConfig, validate_config  # noqa: E402 - needs REPO on sys.path

SCHEMA = "pharia.bench.gpu_engine/v1"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_engine.json"
STAGE = "pretrain"
EOS_ID, PAD_ID = 0, 1  # the first two ids of pharia's byte-level BPE (SPECIAL_TOKENS)
# Train tokens per domain: enough that the W + N steps of the 1b preset (~2.6M tokens) rarely draw
# overlapping windows, so neither side can memorise its data and both losses stay near ln(vocab_size).
TRAIN_TOKENS_PER_DOMAIN = 1 << 22
SMALL_SPLIT_WINDOWS = 2  # validation, heldout, hq: checked by the engine, never read with evaluation off
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ----------------------------------------------------------------------------------- shards
def tokenizer_corpus() -> list[str]:
    """A little English text shipped with Python (stdlib module docstrings): enough for a valid
    byte-level BPE. Its vocabulary stays far below a 50257-id model, which the engine accepts
    (tokenizer size <= vocab_size); the token ids trained on are random anyway."""
    import argparse as argparse_module
    import collections
    import functools
    import json as json_module
    import string

    docs = [m.__doc__ or "" for m in (argparse_module, collections, functools, json_module, string)]
    return docs * 4


def write_synthetic_shards(root: Path, cfg: PipelineConfig, seed: int = 0) -> Path:
    """A shards directory in the data stage's `pharia.shards/v1` layout: manifest.json, one flat
    token file per split and domain (the preset's domains and mixture targets), tokenizer.json.

    Token ids are uniform over the vocabulary: throughput does not depend on their values, and the
    engine validates ids, sizes, the manifest and the tokenizer's sha256 exactly as for real shards.
    """
    from pharia.data.shards import token_dtype
    from pharia.data.tokenizer import build_tokenizer

    vocab, seq_len = cfg.data.vocab_size, cfg.data.seq_len
    dtype = token_dtype(vocab)
    targets = cfg.data.domain_targets()
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_file = root / "tokenizer.json"
    tokenizer_file.write_text(build_tokenizer(iter(tokenizer_corpus()), vocab).to_str(), encoding="utf-8")
    files = {"tokenizer.json": _sha256(tokenizer_file)}
    rng = np.random.default_rng(seed)
    splits: dict[str, dict[str, dict[str, Any]]] = {}
    for split in ("train", "validation", "heldout", "hq"):
        n_tokens = TRAIN_TOKENS_PER_DOMAIN if split == "train" else SMALL_SPLIT_WINDOWS * (seq_len + 1)
        splits[split] = {}
        (root / split).mkdir(exist_ok=True)
        for domain in sorted(targets):
            rel = f"{split}/{domain}.bin"
            rng.integers(0, vocab, size=n_tokens, dtype=np.int64).astype(dtype).tofile(root / rel)
            digest = _sha256(root / rel)
            splits[split][domain] = {"file": rel, "tokens": n_tokens, "sha256": digest}
            files[rel] = digest
    manifest = {
        "schema": "pharia.shards/v1",
        "dtype": dtype.name,
        "vocab_size": vocab,
        "seq_len": seq_len,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "tokenizer": {"file": "tokenizer.json", "sha256": files["tokenizer.json"]},
        "splits": splits,
        "files": files,
        "domain_shares": {domain: {"target": round(share, 6)} for domain, share in targets.items()},
        "synthetic": "benchmarks/gpu_engine.py: uniform random token ids",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------- config
def preset_raw(preset: str) -> dict[str, Any]:
    """The preset's YAML as a dict: a preset name from configs/ or a YAML file (as load_config)."""
    path = Path(preset)
    if not path.is_file():
        path = CONFIGS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown preset {preset!r}: no {path}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def bench_config(raw: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The preset as the engine run uses it, and the warmup W it runs (see the module docstring)."""
    base = validate_config(raw, origin=str(args.preset)).train
    log_every = base.log_every
    warmup = math.ceil(args.warmup_steps / log_every) * log_every
    total = warmup + args.steps
    train = dict(raw.get("train") or {})
    ethics = dict(train.get("ethics") or {})
    for term in ("content_filter", "adversarial", "fairness"):
        ethics[term] = {**(ethics.get(term) or {}), "enabled": False}
    train.update(
        {
            "device": args.device,
            "ranks": 1,
            "precision": args.precision or base.precision,
            "zero_stage": base.zero_stage if args.zero_stage is None else args.zero_stage,
            "micro_batch_size": args.micro_batch_size or base.micro_batch_size,
            "eval_every": 0,
            "eval_after_stage": False,
            "checkpoint_every": total + 1,  # only the stage's last step saves (unavoidable, after timing)
            "keep_checkpoints": 1,
            "ethics": ethics,
            # LR warmup within the stage: the value does not change the cost of a step
            "stages": [{"name": STAGE, "kind": "pretrain", "max_steps": total, "warmup_steps": min(warmup, total)}],
        }
    )
    derived = {**raw, "name": f"{raw.get('name', 'preset')}-engine-bench", "train": train}
    validate_config(derived, origin="benchmark config")  # fail here, not in the worker
    return derived, warmup


# ----------------------------------------------------------------------------------- engine
def run_engine(
    config: dict[str, Any], workdir: Path, shards: Path, warmup: int, steps: int, threads: int
) -> dict[str, Any]:
    """Train with `python -m pharia.train` and measure its last `steps` steps (module docstring)."""
    config_file = workdir / "bench.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    out = workdir / "train"
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    command = [sys.executable, "-m", "pharia.train", "--config", str(config_file), "--shards", str(shards)]
    command += ["--out", str(out), "--ranks", "1", "--tracking-uri", tracking_uri]
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}  # RANK set would make it a worker
    from pharia.workspace import Workspace

    env.setdefault("TORCH_EXTENSIONS_DIR", str(Workspace.from_env().torch_extensions))  # DeepSpeed's op cache
    env["PHARIA_HOME"] = str(workdir / "pharia-home")  # MLflow's experiment artifacts stay in the work dir
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print(f"engine: {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    code = subprocess.call(command, env=env, cwd=REPO)
    wall_s = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the engine run failed with exit code {code} (its output is above)")
    run_summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    stage = run_summary["stages"][STAGE]
    plan = stage["batch_plan"]
    tokens_per_step = plan["global_tokens"]
    windows = _engine_windows(tracking_uri, stage["mlflow_run_id"], warmup, stage["steps"], tokens_per_step)
    return {
        "command": command,
        "env": {k: env[k] for k in ("OMP_NUM_THREADS", "TORCH_EXTENSIONS_DIR", "PHARIA_HOME") if k in env},
        "config_file": str(config_file),
        **windows,
        "stage_tokens_per_s_all_steps": stage["tokens_per_s"],
        "stage_train_s_all_steps": stage["train_s"],
        "stage_steps": stage["steps"],
        "tokens_per_step": tokens_per_step,
        "batch_plan": {k: v for k, v in plan.items() if k not in ("memory", "zero_buckets")},
        "world_size": stage["world_size"],
        "zero_stage": stage["zero_stage"],
        "precision": stage["precision"],
        "device": stage["device"],
        "first_loss": stage["first_loss"],
        "final_loss": stage["final_loss"],
        "skipped_steps": stage["skipped_steps"],
        "final_checkpoint_s_approx": _checkpoint_seconds(out, windows["last_log_time"]),
        "subprocess_wall_s": wall_s,
        "versions": {"torch": run_summary["torch_version"], "deepspeed": run_summary["deepspeed_version"]},
    }


def _engine_windows(tracking_uri: str, run_id: str, warmup: int, total: int, tokens_per_step: int) -> dict[str, Any]:
    """Throughput of steps (warmup, total] from the stage run's MLflow records (module docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    latest: dict[int, Any] = {}  # a retried attempt (out of memory) logs a step again: keep the newest
    for metric in client.get_metric_history(run_id, "tokens_per_s"):
        if metric.step not in latest or metric.timestamp >= latest[metric.step].timestamp:
            latest[metric.step] = metric
    records = [latest[step] for step in sorted(latest)]
    start = next((m for m in records if m.step == warmup), None)
    measured = [m for m in records if m.step > warmup]
    if start is None or not measured or measured[-1].step != total:
        raise SystemExit(f"engine run {run_id}: no log window ends at warmup step {warmup} and at {total}")
    steps = total - warmup
    wall_s = (measured[-1].timestamp - start.timestamp) / 1000
    if wall_s <= 0:
        raise SystemExit(f"engine run {run_id}: {steps} steps took under the 1 ms resolution of MLflow's clock")
    bounds = [warmup] + [m.step for m in measured]
    step_s = sum((b - a) * tokens_per_step / m.value for a, b, m in zip(bounds[:-1], bounds[1:], measured, strict=True))
    memory = {k: v for k, v in client.get_run(run_id).data.metrics.items() if k.startswith("mem_")}
    return {
        "tokens_per_s": steps * tokens_per_step / wall_s,
        "measured_steps": steps,
        "measured_s": wall_s,
        "tokens_per_s_step_windows": steps * tokens_per_step / step_s,
        "log_windows": [{"step": m.step, "tokens_per_s": m.value} for m in records],
        "memory": memory,
        "last_log_time": measured[-1].timestamp / 1000,
    }


def _checkpoint_seconds(out: Path, last_log_time: float) -> float | None:
    """Seconds from the last log record to the final checkpoint's state.json (written last, after
    DeepSpeed's files and the portable state): roughly what the unavoidable checkpoint cost."""
    states = sorted((out / "stages" / STAGE / "checkpoints").glob("step-*/state.json"))
    return states[-1].stat().st_mtime - last_log_time if states else None


# ----------------------------------------------------------------------------------- bare loop
def bare_loop(cfg: PipelineConfig, micro: int, accum: int, warmup: int, steps: int, device_name: str) -> dict:
    """The same training step in plain PyTorch (module docstring, point 3); times `steps` steps."""
    import torch

    from pharia.model.model import PhariaLM
    from pharia.train.deepspeed_config import ADAM_EPS
    from pharia.train.engine import seed_everything

    tcfg, mcfg = cfg.train, cfg.model
    device = torch.device(device_name)
    if tcfg.precision not in ("fp32", "bf16"):
        raise SystemExit(f"the bare loop implements fp32 and bf16, not {tcfg.precision}")
    seed_everything(tcfg.seed)  # as the engine's first stage: built on the CPU, the same initial weights
    model = PhariaLM(mcfg).to(device).set_activation_checkpointing(tcfg.activation_checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bf16 = tcfg.precision == "bf16"
    if bf16:  # DeepSpeed bf16: parameters in bf16, buffers (rotary tables) kept in fp32
        masters = [p.detach().float().clone() for p in params]  # the fp32 weights AdamW updates
        for p in params:
            p.data = p.data.to(torch.bfloat16)
        for m in masters:
            m.grad = torch.zeros_like(m)
    else:
        masters = params
    groups = [
        {"params": [m for m in masters if m.dim() >= 2], "weight_decay": tcfg.weight_decay},
        {"params": [m for m in masters if m.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=tcfg.lr, betas=tcfg.betas, eps=ADAM_EPS)
    seq = cfg.data.seq_len
    generator = torch.Generator(device=device).manual_seed(tcfg.seed)
    data = torch.randint(
        0, mcfg.vocab_size, (warmup + steps, accum, micro, seq + 1), device=device, generator=generator
    )
    losses: list[torch.Tensor] = []

    def step(index: int) -> None:
        total = torch.zeros((), device=device)
        for micro_index in range(accum):
            ids = data[index, micro_index]
            out = model(ids[:, :-1], ids[:, 1:])
            loss = out.loss
            if out.aux_loss is not None:
                loss = loss + tcfg.aux_loss_coef * out.aux_loss
            if out.z_loss is not None:
                loss = loss + mcfg.router_z_loss_coef * out.z_loss
            (loss / accum).backward()
            total += out.loss.detach().float()
        if bf16:  # bf16 gradients into the fp32 masters' (a parameter no loss reached has none)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            torch._foreach_copy_([m.grad for m in masters], grads)
        torch.nn.utils.clip_grad_norm_(masters, tcfg.grad_clip)
        optimizer.step()
        if bf16:
            torch._foreach_copy_([p.data for p in params], masters)
        model.zero_grad(set_to_none=True)
        losses.append(total / accum)  # stays on the device: no host sync inside the timed steps

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for index in range(warmup):
        step(index)
    synchronize()
    started = time.perf_counter()
    for index in range(warmup, warmup + steps):
        step(index)
    synchronize()
    seconds = time.perf_counter() - started
    tokens_per_step = micro * accum * seq
    result: dict[str, Any] = {
        "tokens_per_s": steps * tokens_per_step / seconds,
        "measured_steps": steps,
        "measured_s": seconds,
        "warmup_steps": warmup,
        "tokens_per_step": tokens_per_step,
        "micro_batch_size": micro,
        "grad_accum_steps": accum,
        "precision": tcfg.precision,
        "weights": "bf16 parameters + fp32 master weights" if bf16 else "fp32",
        "optimizer": "torch.optim.AdamW (default implementation), clip_grad_norm_",
        "losses": [float(x) for x in torch.stack(losses).tolist()],
    }
    if device.type == "cuda":
        result["memory"] = {"mem_gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    return result


# ----------------------------------------------------------------------------------- report
def machine_info(device_name: str) -> dict[str, Any]:
    import torch

    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "deepspeed": package("deepspeed"),
        "mlflow": package("mlflow"),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        info["cpu"] = names[0] if names else None
    if device_name == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def peak_flops_of(device_name: str, override_tflops: float | None) -> float | None:
    """The engine's own peak (pharia.train.engine.peak_flops: by GPU name, None on CPU) unless overridden."""
    if override_tflops is not None:
        return override_tflops * 1e12
    import torch

    from pharia.train.engine import peak_flops

    return peak_flops(torch.device(device_name, 0) if device_name == "cuda" else torch.device("cpu"))


def add_flops(measurement: dict[str, Any], flops_per_token: int, peak: float | None) -> None:
    tokens_per_s = measurement["tokens_per_s"]
    measurement["model_tflops_per_s"] = tokens_per_s * flops_per_token / 1e12
    measurement["mfu"] = tokens_per_s * flops_per_token / peak if peak else None


def micro_batch_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1b", help="preset name in configs/ or a config YAML (default: 1b)")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cuda: one GPU (default); cpu: a smoke run of the script (with --preset tiny), MFU null",
    )
    parser.add_argument("--steps", type=int, default=30, help="measured optimizer steps of each side (default: 30)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="untimed steps first, rounded up to a multiple of the preset's log_every so that an engine "
        "log window ends there; the bare loop warms up as many (default: 10)",
    )
    parser.add_argument(
        "--zero-stage", type=int, choices=[0, 1, 2, 3], help="override train.zero_stage (default: the preset's)"
    )
    parser.add_argument(
        "--micro-batch-size",
        type=micro_batch_arg,
        help="windows per forward, an integer or auto (default: the preset's); gradient accumulation "
        "follows from the preset's global batch",
    )
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], help="override train.precision (default: the preset's)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="peak dense TFLOP/s for MFU (default: pharia's table by GPU name)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep shards, engine outputs and MLflow store here (default: a temporary directory, removed "
        "at the end; for the 1b preset it needs ~35 GB: final checkpoint plus saved fp32 weights)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup-steps must be >= 1 (the warmup's last log record starts the clock)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config, warmup = bench_config(preset_raw(args.preset), args)
    cfg = validate_config(config, origin="benchmark config")
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pharia-gpu-engine-") as temp:
        workdir = args.workdir or Path(temp)
        if (workdir / "train").exists():  # `pharia train` would resume it: no steps would be measured
            raise SystemExit(f"--workdir {workdir} already holds an engine run (train/): use an empty directory")
        workdir.mkdir(parents=True, exist_ok=True)
        shards = write_synthetic_shards(workdir / "shards", cfg)
        engine = run_engine(config, workdir, shards, warmup, args.steps, threads)

        import torch

        from pharia.model.flops import flops_per_token

        torch.set_num_threads(threads)  # what the engine's worker got (OMP_NUM_THREADS)
        plan = engine["batch_plan"]
        print(f"bare loop: micro {plan['micro_batch_size']} x accum {plan['grad_accum_steps']}", flush=True)
        bare = bare_loop(cfg, plan["micro_batch_size"], plan["grad_accum_steps"], warmup, args.steps, args.device)
    flops = flops_per_token(cfg.model)
    peak = peak_flops_of(args.device, args.peak_tflops)
    for measurement in (engine, bare):
        add_flops(measurement, flops, peak)
    ratio = engine["tokens_per_s"] / bare["tokens_per_s"]
    report = {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "preset": args.preset,
        "device": args.device,
        "machine": machine_info(args.device),
        "threads": threads,
        "seq_len": cfg.data.seq_len,
        "flops_per_token": flops,
        "peak_flops": peak,
        "warmup_steps_requested": args.warmup_steps,
        "warmup_steps": warmup,
        "steps": args.steps,
        "engine": engine,
        "bare": bare,
        "ratio_engine_over_bare_tokens_per_s": ratio,
        "measures": {
            "engine.tokens_per_s": "last --steps steps, wall clock between MLflow log records (logging included)",
            "engine.tokens_per_s_step_windows": "same steps, from the engine's per-window tokens_per_s metric",
            "engine.stage_tokens_per_s_all_steps": "stage summary: all steps incl. warmup, step time only",
            "bare.tokens_per_s": "last --steps steps, wall clock between device synchronisations",
        },
        "commands": {"benchmark": [sys.executable, *sys.argv], "engine": engine["command"]},
        "engine_config": config,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")

    def mfu(m: dict[str, Any]) -> str:
        return f", MFU {m['mfu']:.1%}" if m["mfu"] is not None else ""

    print(f"engine: {engine['tokens_per_s']:,.0f} tokens/s{mfu(engine)}", flush=True)
    print(f"bare:   {bare['tokens_per_s']:,.0f} tokens/s{mfu(bare)}", flush=True)
    print(f"engine/bare: {ratio:.3f}; report in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
