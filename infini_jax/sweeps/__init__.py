"""Sweeps: a sweep file's runs and their commands, the SLURM launcher, and the summaries."""
