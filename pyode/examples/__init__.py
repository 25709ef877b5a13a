"""Runnable examples (``python -m pyode demo <name>``)."""
