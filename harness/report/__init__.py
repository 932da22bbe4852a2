"""Run records -> reports: tables (markdown, CSV, LaTeX) and one HTML page with plots.

load.py reads and checks the records (and lmeval_import.py lm-evaluation-harness's files), stats.py and
variance.py hold the statistics, tables.py, board.py and studies.py build the tables, render.py and plots.py
draw them; the command is harness/cli/report.py.
"""
