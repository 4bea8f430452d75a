"""Training: the pure train step, the optimizer, the step loop and its periodic work
(checkpoints, metrics, validation, W&B, goodput, the profiler) and the end-of-run report."""
