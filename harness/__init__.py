"""harness: in-context learning versus light fine-tuning, measured under one protocol."""

__version__ = "0.1.0"
