"""Results: the run directory layout, atomic writes, metrics logging, comparison tables."""
