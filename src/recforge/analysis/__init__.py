"""Analyses of a finished run's model: pure functions of arrays (no files, no model)."""
