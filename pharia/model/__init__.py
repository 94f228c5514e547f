"""The Pharia transformer: model, generation and safetensors I/O (see SPEC.md for the design)."""

from pharia.model.model import ModelOutput, ParamCounts, PhariaLM, build_model, count_parameters

__all__ = ["ModelOutput", "ParamCounts", "PhariaLM", "build_model", "count_parameters"]
