"""Reading checkpoints safely: a damaged, truncated or foreign file is one clear user error, never a traceback.

``load_checkpoint`` is for code that needs the weights (recforge-eval, export); ``check_checkpoint`` is for
code that hands a path to Lightning to continue training (``ckpt_path=...``, ``resume=true``) and must know
beforehand that the file is complete.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from recforge.errors import RecforgeError

# What Lightning reads to continue training (epoch counters, loop progress, optimizer and scheduler state).
TRAINING_STATE = ("epoch", "global_step", "loops", "optimizer_states", "lr_schedulers")


def _unreadable(path: Path, reason: str) -> RecforgeError:
    return RecforgeError(
        f"checkpoint {path} could not be read ({reason}); it is damaged, truncated or not a recforge checkpoint."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` loaded on the CPU with ``weights_only=True`` (tensors and plain containers only).

    Any failure (missing file, truncated zip, random bytes, an object that is not a checkpoint, no
    ``state_dict`` of tensors) raises a RecforgeError naming the absolute path.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise RecforgeError(f"checkpoint {path} {problem}; expected a .ckpt file written by recforge-train.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever torch, pickle or zipfile raise, the file is unusable
        raise _unreadable(path, type(exc).__name__) from exc
    if not isinstance(ckpt, dict):
        raise _unreadable(path, f"it holds a {type(ckpt).__name__}, not a dict")
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping):
        raise _unreadable(path, "no 'state_dict' entry")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise _unreadable(path, "its 'state_dict' holds entries that are not named tensors")
    return ckpt


def check_checkpoint(path: str | Path) -> None:
    """Fail unless ``path`` is a readable checkpoint with the full training state Lightning needs to continue.

    Loads the whole file once (a truncated file fails here, before any run directory is written to).
    """
    ckpt = load_checkpoint(path)
    missing = [key for key in TRAINING_STATE if key not in ckpt]
    if missing:
        raise RecforgeError(
            f"checkpoint {Path(path).expanduser().resolve()} holds model weights but no training state "
            f"({', '.join(missing)} missing), so training cannot continue from it; pass a checkpoint written by "
            "recforge-train such as checkpoints/last.ckpt."
        )


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """How a checkpoint's ``found`` weights differ from a model's ``expected`` ones (first few), or None."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    resized = [f"{key} {tuple(found[key].shape)} vs {tuple(expected[key].shape)}"
               for key in expected if key in found and found[key].shape != expected[key].shape]
    parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", resized)) if keys]
    return "; ".join(parts) or None
