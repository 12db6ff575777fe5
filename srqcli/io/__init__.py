"""File input/output: atomic writes, model and checkpoint loading."""
