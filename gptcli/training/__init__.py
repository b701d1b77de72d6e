"""model -> trained checkpoint: the loop (loop.py), what it builds before the first step
(run.py), the optimizer and schedule, batches, checkpoints, resuming, signals, and distributed
data parallel under torchrun."""
