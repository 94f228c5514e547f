"""The Pharia transformer: model, generation and safetensors I/O (see SPEC.md for the design).

Import from the submodules (`pharia.model.model`, `.io`, `.generate`): this package file stays free
of torch so that `pharia --help` and the data commands start without paying for the import.
"""
