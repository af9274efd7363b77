"""Training diagnostics: measurements taken on a fixed probe batch during training, logged with the metrics."""
