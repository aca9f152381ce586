"""Benchmarks; run them as scripts, e.g. `.venv/bin/python bench/sql_database.py`."""
