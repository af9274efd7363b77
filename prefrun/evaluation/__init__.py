"""Evaluation: sample from policy and reference, score with the oracle, KL, win rate."""
