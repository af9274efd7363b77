"""Trainers: TRL subclasses (the list trainer) and the cached SFT stage that builds the reference."""
