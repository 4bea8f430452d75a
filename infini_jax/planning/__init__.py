"""The plan before a launch: the train step compiled for a target (a Cloud TPU slice or CPU
devices), its memory per device and fit, and the search over remat, micro-batches and batch
(`python -m infini_jax.plan`)."""
