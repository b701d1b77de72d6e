"""many runs -> understanding: grid (what to vary), sweep (the runs, through a launcher: local
processes or Ray), compare (table, intervals, verdicts, plots), report (one HTML page of a study,
with inspect's pictures of its runs)."""
