"""User-facing errors: one sentence naming what is wrong and where; no traceback."""
from __future__ import annotations


class RecforgeError(Exception):
    """An error the user can cause and fix (bad data file, bad config value, missing dataset).

    The message is one sentence that names the file, key or value and what was expected.
    Entry points print it without a traceback and exit with status 2. ``keep_run`` False: the error was found
    before any result existed, so the run directory is removed (nothing half-written).
    """

    keep_run = False


class TrainingDiverged(RecforgeError):
    """The loss became NaN or infinite: the run stops, its directory (checkpoints, logs) is kept with failed.json."""

    keep_run = True
