"""Tokens/s and MFU of a preset's training step on one GPU in bf16 (default: the `1b` preset, H100).

    python benchmarks/gpu_1b.py [--preset 1b] [--batch 4] [--steps 10] [--attention sparse dense]
                                [--moe-dispatch padded loop]

One optimizer step = forward + backward + fused AdamW on fp32 master weights, the forward under
bf16 autocast (RMSNorm, rotary and the router stay fp32 inside the model), activation checkpointing
per block as the preset says. MFU = tokens/s · flops_per_token / peak, with flops_per_token from
pharia.model.flops (6 · active matmul params + the attention term at the preset's effective
context) and the peak of a dense bf16 H100 SXM, 989 TFLOP/s (--peak-tflops to change). Each
`--attention` variant is measured after `--warmup` untimed steps (compilation of flex_attention
happens there); the loss of every step is recorded so a diverging or NaN run shows. `--moe-dispatch`
compares the fixed-shape MoE dispatch (`padded`, the default in training) with the reference loop
(`loop`, one host sync per expert), each in the same run. Runs on CPU too
(`--device cpu --preset tiny`) as a smoke test of the script itself; MFU is then omitted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

H100_BF16_DENSE_TFLOPS = 989.0


def measure(
    preset: str,
    attention: str,
    batch: int,
    steps: int,
    warmup: int,
    device: str,
    peak: float,
    dispatch: str = "padded",
    compile_model: bool = False,
) -> dict:
    import torch

    from pharia.config import load_config
    from pharia.model.flops import model_stats
    from pharia.model.model import PhariaLM
    from pharia.model.moe import MixtureOfExperts

    pipeline = load_config(preset)
    cfg = pipeline.model.model_copy(update={"attention": attention})
    stats = model_stats(cfg)
    torch.manual_seed(0)
    model = PhariaLM(cfg).to(device).set_activation_checkpointing(pipeline.train.activation_checkpointing)
    model.train()
    for module in model.modules():
        if isinstance(module, MixtureOfExperts):
            module.padded_dispatch = dispatch == "padded"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    forward = torch.compile(model) if compile_model else model
    seq = cfg.max_seq_len
    generator = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device, generator=generator)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    losses: list[float] = []

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"):
            out = forward(inputs, targets=targets)
        loss = out.loss
        if out.aux_loss is not None and out.z_loss is not None:
            loss = loss + 0.01 * out.aux_loss + cfg.router_z_loss_coef * out.z_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_s = batch * seq * steps / seconds
    result: dict[str, Any] = {
        "preset": preset,
        "attention": attention,
        "moe_dispatch": dispatch,
        "compiled": compile_model,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": batch,
        "seq": seq,
        "steps_timed": steps,
        "step_s": seconds / steps,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": stats.flops_per_token,
        "attention_context": stats.attention_context,
        "total_params": stats.total_params,
        "active_params_per_token": stats.active_params_per_token,
        "model_tflops_per_s": tokens_per_s * stats.flops_per_token / 1e12,
        "losses": losses,
        "moe": model.moe_stats(),
    }
    if device == "cuda":
        result["mfu"] = tokens_per_s * stats.flops_per_token / (peak * 1e12)
        result["peak_tflops"] = peak
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result  # model, optimizer and step() go out of scope here: the next variant starts empty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--attention", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"])
    parser.add_argument(
        "--moe-dispatch", nargs="+", default=["padded"], choices=["padded", "loop"], help="MoE dispatch paths to time"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in the warmup)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (each max_seq_len tokens)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    variants = [(attention, dispatch) for attention in args.attention for dispatch in args.moe_dispatch]
    for attention, dispatch in variants:
        try:
            result = measure(
                args.preset,
                attention,
                args.batch,
                args.steps,
                args.warmup,
                args.device,
                args.peak_tflops,
                dispatch,
                args.compile,
            )
        except Exception as exc:  # one variant failing (e.g. a kernel) must not lose the other's numbers
            print(f"{args.preset} {attention} {dispatch}: FAILED {type(exc).__name__}: {exc}", flush=True)
            failed = {"preset": args.preset, "attention": attention, "moe_dispatch": dispatch, "error": repr(exc)}
            results.append(failed)
            continue
        mfu = f", MFU {result['mfu']:.1%}" if "mfu" in result else ""
        print(
            f"{result['preset']} {attention} moe-{dispatch}: {result['tokens_per_s']:,.0f} tokens/s, "
            f"{result['model_tflops_per_s']:.1f} model TFLOP/s{mfu}, step {result['step_s'] * 1000:.0f} ms, "
            f"loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}",
            flush=True,
        )
        results.append(result)
        if args.device == "cuda":
            import torch

            torch.cuda.empty_cache()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
