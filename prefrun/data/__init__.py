"""Data: the one record shape, loaders from public schemas, synthetic tasks, curricula, the collator."""
