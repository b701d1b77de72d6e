"""model -> trained checkpoint: the loop (loop.py), what it builds before the first step
(run.py), the precision auto trains in (precision.py), the optimizer and schedule, batches,
resuming, signals, and distributed data parallel under torchrun. Checkpoints themselves live in
gptcli.checkpoint, which every stage shares."""
