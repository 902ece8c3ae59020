"""What every entry point shares: building the parts, resuming, checkpoints, run records, validation, sweeps,
progress and one-line user errors."""
