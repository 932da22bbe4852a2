"""`python -m harness report`: run records -> tables (markdown, CSV, LaTeX) and one HTML page with plots.

load.py reads the records, stats.py holds the statistics, tables.py builds the report's tables,
render.py and plots.py draw them, command.py is the command line.
"""
