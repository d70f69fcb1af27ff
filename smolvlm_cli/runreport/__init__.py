# `smolvlm report`: read training runs (metrics.jsonl, run.json, recipe.yaml, best/) and write one self-contained
# HTML page plus PNG plots. read.py parses runs, series.py turns them into plot series, render.py draws and writes.
