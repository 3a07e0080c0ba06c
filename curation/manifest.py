"""Reading the manifest for a build: `schemas.manifest`'s rows, with local paths made absolute.

What a usable row is, and the quarantine reason of each one that is not, is the manifest contract
in `schemas.manifest` (so `python -m schemas validate` applies the same rules). This module adds
what only a build needs: relative local paths in `uri` and `text_uri` resolve against the
manifest's folder, and a manifest that is unusable as a whole (`ManifestRead.problem`) is refused
by `require_usable` with one line naming the fix.
"""

from __future__ import annotations

import functools
import urllib.parse
from pathlib import Path

from curation.skips import declare_reasons
from schemas.cli import UsageError
from schemas.manifest import (
    STAGE,
    ManifestFileError,
    ManifestRead,
    ManifestRow,
    check_manifest,
    skip_row,
)

__all__ = ["STAGE", "ManifestRead", "ManifestRow", "is_local", "local_path", "read_manifest", "require_usable"]

# The rows `schemas.manifest` refuses (schemas may not import curation): a row's own content
# decides each of these, and a changed row is a new item.
declare_reasons(final=("invalid_row", "missing_id", "unsafe_id", "id_too_long", "duplicate_id", "missing_uri",
                       "unreadable_row"))


def is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("youtube:")


def local_path(uri: str) -> Path | None:
    """The file a local path or file:// URI names; None for anything fetched from elsewhere."""
    if uri.startswith("file://"):
        return Path(urllib.parse.unquote(uri.removeprefix("file://")))
    return Path(uri) if is_local(uri) else None


def _resolve(uri: str | None, base: Path) -> str | None:
    if uri is None or not is_local(uri):
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def read_manifest(path: str | Path) -> ManifestRead:
    """All usable rows in file order, and a quarantine row for each one that is not usable.

    Raises only for the file as a whole: missing (FileNotFoundError), of an unknown kind or
    unreadable as a whole (`schemas.manifest.ManifestFileError`)."""
    path = Path(path)
    checked = check_manifest(path)
    base = path.resolve().parent
    rows, skips = [], list(checked.skips)
    for row in checked.rows:
        try:
            rows.append(row.model_copy(update={"uri": _resolve(row.uri, base),
                                               "text_uri": _resolve(row.text_uri, base)}))
        except (ValueError, OSError, RuntimeError) as error:  # a path the OS refuses
            skips.append(skip_row(row.video_id, "invalid_row", f"a path could not be read ({type(error).__name__})"))
    return ManifestRead(rows=rows, skips=skips, problem=checked.problem)


def require_usable(path: str | Path) -> ManifestRead:
    """`read_manifest`, refusing a file that is unusable as a whole with one line (a UsageError):
    a misnamed required column, no readable or no usable row, a broken Parquet file. Read once
    per content: the command line checks the manifest before Prefect starts, the flow reads it."""
    path = Path(path).resolve()
    stat = path.stat() if path.is_file() else None
    return _read_usable(path, stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)


@functools.lru_cache(maxsize=2)
def _read_usable(path: Path, mtime_ns: int, size: int) -> ManifestRead:
    try:
        read = read_manifest(path)
    except ManifestFileError as error:
        raise UsageError(f"manifest {error}", "fix the file or export it again") from None
    if read.problem:
        raise UsageError(f"manifest {read.problem}")
    return read
