"""Training: DeepSpeed on CPU (gloo) or CUDA (NCCL), three chained stages (docs/training.md).

- `cli`: `pharia train ...` / `python -m pharia.train ...`: supervisor (OOM retry) and worker roles
- `launch`: `run_training()`, the subprocess boundary callers (flows, tests) use
- `trainer`: `train()`, every stage in order inside every rank
- `stage`: one stage: engine, resume, checkpoints, final weights, stage evaluation
- `loop`: the optimizer steps: filter, forward, ethics terms, one backward, logging
- `engine`: process group, optimizer groups, gathering full weights
- `deepspeed_config`, `batch_size`: the DeepSpeed config and the memory-driven batch plan
- `data`: packed shards -> step-addressed mixture batches, fixed held-out windows
- `task_data`: instruction/task examples with answer-only targets (task stage)
- `checkpoint`, `portable`: atomic checkpoints, world-size-independent optimizer state
- `ethics`: content filter, adversarial term, fairness term (docs/training-ethics.md)
- `eval_hook`: continuous evaluation; `runs`: nested MLflow runs; `progress`: rank-0 progress

Nothing here is imported by `import pharia.train`, so the CLI stays cheap to register.
"""
