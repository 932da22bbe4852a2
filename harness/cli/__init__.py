"""The commands (`python -m harness run | list | report | sensitivity | cache`), on top of every other step."""
