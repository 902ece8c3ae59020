"""Shared entry-point behaviour: user errors become one sentence on stderr and exit status 2."""
from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from recforge.errors import RecforgeError


def _root_cause(exc: BaseException) -> BaseException:
    """The RecforgeError behind ``exc`` if there is one (Hydra wraps errors raised while instantiating)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RecforgeError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return exc


def _one_line(exc: BaseException) -> str:
    """Hydra's instantiation message, folded onto one line: it names the target, the key and the cause."""
    return " ".join(str(exc).split())


def check_required(cfg: DictConfig) -> None:
    """Fail before any work when a required value (``???``) was never set."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise RecforgeError(f"config value {', '.join(missing)} is required but not set; pass it on the command line, e.g. {missing[0]}=...")


@contextmanager
def user_errors(run_dir: str | Path | None = None, remove: bool = True) -> Iterator[None]:
    """Print a user error in one line and exit 2; remove the run directory if it holds no results, or record
    the failure in it (failed.json) when the error says the run is worth keeping. ``remove=False``: the
    directory held an earlier run (resume) and is never removed."""
    from recforge.run.sweep import record_failure

    try:
        yield
    except (RecforgeError, InstantiationException, MissingMandatoryValue) as exc:
        cause = _root_cause(exc)
        if run_dir is not None and getattr(cause, "keep_run", False):
            record_failure(run_dir, cause)  # a diverged run keeps its checkpoints and logs
        elif run_dir is not None and remove and not (Path(run_dir) / "metrics.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"recforge: error: {_one_line(cause)}", file=sys.stderr)
        raise SystemExit(2) from None
