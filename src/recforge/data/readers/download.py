"""Download, sha256-verify and extract the official GroupLens MovieLens zips."""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recforge.data.readers._parsing import _abs
from recforge.errors import RecforgeError

# sha256 of the official GroupLens zips, as registered (and verified on every
# download) by tensorflow_datasets in tensorflow_datasets/url_checksums/movielens.txt.
# A None entry means "unknown": download_movielens then refuses to fetch it.
MOVIELENS_SHA256: dict[str, str | None] = {
    "ml-100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    "ml-1m": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    "ml-20m": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
}
_MOVIELENS_FILES = {
    "ml-100k": ["u.data", "u.item"],
    "ml-1m": ["ratings.dat", "movies.dat"],
    "ml-20m": ["ratings.csv", "movies.csv"],
}
_MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
_RETRIES = 3
_RETRY_DELAY_S = 2.0
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


# --------------------------------------------------------------------------- download


def download_movielens(
    name: str, root: str, url: str | None = None, sha256: str | None = None
) -> Path:
    """Download, verify (sha256) and extract a GroupLens MovieLens zip into ``root/name``.

    Returns ``root/name``; does nothing when its files are already there.  ``url``
    and ``sha256`` override the official address and checksum (used by tests).
    Extraction happens in a temporary folder inside ``root`` that is renamed
    into place, so a failure never leaves a half-written dataset behind.
    """
    files = _MOVIELENS_FILES.get(name)
    if files is None:
        known = ", ".join(_MOVIELENS_FILES)
        raise RecforgeError(f"unknown MovieLens dataset '{name}', expected one of {known}")
    target = _abs(Path(root)) / name
    if _already_there(name, target, files):
        return target
    url = url or _MOVIELENS_URL.format(name=name)
    expected = sha256 or MOVIELENS_SHA256.get(name)
    if expected is None:
        raise RecforgeError(
            f"dataset '{name}': the sha256 of {url} is unknown, so it cannot be verified; "
            f"download it yourself and place the files {', '.join(files)} in {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _download_into(name, url, expected.lower(), target, files)
    return target


def _already_there(name: str, target: Path, files: list[str]) -> bool:
    """True if ``target`` holds all files; raise if it exists without them (never overwrite)."""
    missing = [f for f in files if not (target / f).is_file()]
    if missing and target.exists():
        raise RecforgeError(
            f"dataset '{name}': {target} exists but lacks {', '.join(missing)}; "
            "remove it to download again or add the files by hand"
        )
    return not missing


def _download_into(name: str, url: str, expected: str, target: Path, files: list[str]) -> None:
    """Fetch, verify and extract in a temp folder next to ``target``, then rename it in."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=target.parent))
    manual = f"place the files {', '.join(files)} in {target} instead"
    try:
        archive = tmp / f"{name}.zip"
        digest = _fetch(url, archive, manual)
        if digest != expected:
            raise RecforgeError(
                f"dataset '{name}': {url} has sha256 {digest}, expected {expected} "
                f"(corrupt or changed download); {manual}"
            )
        extracted = _extract(archive, tmp / "extract", name, files, manual)
        try:
            os.replace(extracted, target)
        except OSError as exc:
            if not all((target / f).is_file() for f in files):
                raise RecforgeError(
                    f"dataset '{name}': could not move the files into {target} ({exc.strerror})"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(url: str, dest: Path, manual: str) -> str:
    """Download ``url`` to ``dest`` with retries on network errors; return its sha256."""
    last: BaseException | None = None
    for attempt in range(_RETRIES + 1):
        try:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest()
        except ValueError as exc:  # not a URL at all: retrying cannot help
            raise RecforgeError(f"cannot download {url!r} ({exc}); {manual}") from None
        except _NETWORK_ERRORS as exc:
            last = exc
            if attempt < _RETRIES:
                time.sleep(_RETRY_DELAY_S * (attempt + 1))
    reason = getattr(last, "reason", None) or last
    raise RecforgeError(
        f"could not download {url} after {_RETRIES + 1} attempts ({reason}; no network?); {manual}"
    )


def _extract(archive: Path, dest: Path, name: str, files: list[str], manual: str) -> Path:
    """Extract the zip into ``dest`` and return its ``name/`` folder holding ``files``."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(dest)
    except zipfile.BadZipFile:
        raise RecforgeError(
            f"dataset '{name}': the downloaded file is not a valid zip archive; {manual}"
        ) from None
    folder = dest / name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise RecforgeError(f"dataset '{name}': the archive has no {name}/{missing[0]}; {manual}")
    return folder
