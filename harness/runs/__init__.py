"""One run as a readable loop (run.py: plan, prepare, predict, measure, record), its records and locks, data-parallel
runs, sensitivity-study records and the lm-evaluation-harness export."""
