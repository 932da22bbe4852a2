"""The OpenAI-compatible backend: a model served elsewhere (a vLLM server, any /v1/completions endpoint)."""
