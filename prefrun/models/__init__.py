"""Models: the built-in tiny model, loading hub ids or local paths, PEFT."""
