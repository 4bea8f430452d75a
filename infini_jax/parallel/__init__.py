"""Parallelism: the device mesh and the shardings of parameters, optimizer state and batches;
Cloud TPU slices (topologies, multi-slice); accelerators' datasheet peaks and memory."""
