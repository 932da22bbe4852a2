"""Task kinds: one module per kind (classification, multiple choice, cloze, short answers, perplexity), each a
registered object that builds a run's requests, turns scores into predictions and measures them (base.py)."""
