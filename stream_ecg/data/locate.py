"""Where the MIT-BIH data lives: the full database, the bundled excerpt, and how to fetch it."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STREAM_ECG_MITDB"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_REPO_ROOT = _PACKAGE_DIR.parent
_SHARED_MITDB = _REPO_ROOT.parent / "shared" / "data" / "mitdb"

_HOW_TO_GET = (
    f"set {ENV_VAR}=/path/to/mitdb (a directory holding 100.hea, 100.dat, 100.atr, ...), "
    "or download it from PhysioNet with "
    "python -c \"import wfdb; wfdb.dl_database('mitdb', 'data/mitdb')\", "
    "or run `stream-ecg data fetch DEST`"
)


class MitdbMissing(FileNotFoundError):
    """The full MIT-BIH database is not where we looked; the message says how to get it."""

    def __init__(self, searched: str = "") -> None:
        where = f" (looked in {searched})" if searched else ""
        super().__init__(f"MIT-BIH Arrhythmia Database not found{where}: {_HOW_TO_GET}.")


def mitdb_dir(required: bool = True) -> Path | None:
    """The full database: $STREAM_ECG_MITDB if set, else ../shared/data/mitdb beside the repo.

    An explicit $STREAM_ECG_MITDB that does not exist is an error, never silently replaced
    by the shared copy, so a typo cannot make a run use data the user did not ask for.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path
        if required:
            raise MitdbMissing(f"{ENV_VAR}={env}")
        return None
    if _SHARED_MITDB.is_dir():
        return _SHARED_MITDB
    if required:
        raise MitdbMissing(f"{ENV_VAR} unset, {_SHARED_MITDB}")
    return None


def excerpt_dir() -> Path:
    """The bundled 3-record, 5-minute excerpt shipped inside the package (works offline)."""
    return Path(__file__).resolve().parent / "excerpt"


def fetch_mitdb(dest: Path) -> Path:
    """Download the full database from PhysioNet into `dest` (needs network; ~100 MB)."""
    import wfdb

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wfdb.dl_database("mitdb", str(dest))
    return dest
