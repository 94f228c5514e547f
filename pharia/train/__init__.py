"""Training stage: DeepSpeed on CPU (gloo) or CUDA (NCCL), one stage (pre-training) for now.

- `deepspeed_config`: TrainConfig -> DeepSpeed config dict
- `data`: packed token shards -> seeded training batches, fixed held-out windows
- `loop`: `train()`, run inside every rank of a distributed job
- `cli`: `pharia train ...` / `python -m pharia.train ...` (single process or torchrun)
- `launch`: `run_training()`, the subprocess boundary callers (flows, tests) use

Nothing here is imported by `import pharia.train`, so the CLI stays cheap to register.
"""
