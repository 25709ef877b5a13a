"""pyode's benchmark suite: pyode vs torchdiffeq vs torchode side by side (``python bench/run.py``)."""
