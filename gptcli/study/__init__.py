"""many checkpoints -> understanding: sweep (a grid of runs) and compare (a table and curves)."""
