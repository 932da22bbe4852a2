"""Prompts -> requests -> backend -> scores: the model interface (backend.py), the token requests, and what sits
above every backend once: prefix grouping, batching, the journal, out-of-memory halving. hf/ is the transformers
backend."""
