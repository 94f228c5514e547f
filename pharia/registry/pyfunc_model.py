"""MLflow pyfunc wrapper (models-from-code): `mlflow.pyfunc.load_model(uri).predict(prompts)` returns
continuations. Logged as code, not pickled, so loading a registered model never unpickles anything;
the weights travel as safetensors artifacts."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class PhariaGenerator(PythonModel):
    def load_context(self, context: Any) -> None:
        import json
        from pathlib import Path

        from tokenizers import Tokenizer

        from pharia.model.io import load_pretrained

        self.model, _ = load_pretrained(Path(context.artifacts["model"]))
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(context.artifacts["tokenizer"])
        self.tokenizer.encode_special_tokens = True  # "<|endoftext|>" typed in a prompt is text, not eos
        special = json.loads(Path(context.artifacts["special_tokens"]).read_text())
        self.eos, self.pad = int(special["eos_token_id"]), int(special["pad_token_id"])

    def predict(self, context, model_input, params=None):  # untyped: MLflow infers a schema from hints
        import torch

        from pharia.model.generate import generate

        params = params or {}
        prompts = list(model_input.iloc[:, 0]) if hasattr(model_input, "iloc") else list(model_input)
        ids = [e.ids for e in self.tokenizer.encode_batch([str(p) for p in prompts])]
        out = generate(
            self.model,
            ids,
            max_new_tokens=int(params.get("max_new_tokens", 32)),
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            generator=torch.Generator().manual_seed(int(params.get("seed", 0))),
        )
        return [self.tokenizer.decode(o) for o in out]


mlflow.models.set_model(PhariaGenerator())
