"""The vLLM backend: vLLM's offline engine in a worker process, from an environment of its own if need be."""
