"""Predictions -> metrics: the registered metrics (registry.py) and what they are computed with (functions.py)."""
