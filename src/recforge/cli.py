"""Shared entry-point behaviour: user errors become one sentence on stderr and exit status 2."""
from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hydra.errors import InstantiationException

from recforge.errors import RecforgeError


def _user_error(exc: BaseException) -> RecforgeError | None:
    """The RecforgeError behind ``exc`` (Hydra wraps errors raised while instantiating), if any."""
    while exc is not None:
        if isinstance(exc, RecforgeError):
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


@contextmanager
def user_errors(run_dir: str | Path | None = None) -> Iterator[None]:
    """Print a user error in one line and exit 2; remove the run directory if it holds no results."""
    try:
        yield
    except (RecforgeError, InstantiationException) as exc:
        err = _user_error(exc)
        if err is None:
            raise
        if run_dir is not None and not (Path(run_dir) / "metrics.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"recforge: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
