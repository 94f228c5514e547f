"""Data stages: sources -> ingest (normalise, filter, mix, split) -> validate (Great Expectations)
-> tokenize (byte-level BPE) -> pack (token shards + manifest), runnable one by one
(`pharia data ...`), all at once (`prepare`) or as a DVC pipeline (`dvc_project`)."""
