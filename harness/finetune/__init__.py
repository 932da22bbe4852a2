"""Light fine-tuning on the k examples ICL would show: one module per method (LoRA, IA3, prompt tuning, BitFit,
full), registered in method.py, and the training loop (train.py)."""
