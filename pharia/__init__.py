"""pharia: from raw text to a trained, evaluated, registered and audited language model."""

__version__ = "0.1.0"
