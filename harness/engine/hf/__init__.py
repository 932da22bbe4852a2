"""The transformers backend: loading (hub, local, GGUF), the shared-prefix scorer, continuous-batching decoding."""
