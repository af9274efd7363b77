"""Leaf services every layer may use: ranks, checkpoints and resume, experiment tracking, threads."""
