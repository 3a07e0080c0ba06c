"""What a published row may say about where its video came from: a URL, never the builder's disk.

A result file (`work/results/`) is the builder's own cache and keeps everything as it was, local
paths included, so a failure can be traced on the machine that built it. A shard is what readers
get, so `shards` writes each record through `public_record`:

- `videos.uri`: a URL stays (the reader can fetch the video again and check its `sha256`), minus
  any user:password and credential-like query parameters (`X-Amz-Signature`, `token`, ...);
  a local file (a path or a `file://` URI) becomes `local:<file name>`: the name says which
  file it was, the folder is the builder's business, and nothing pretends it can be fetched.
- `quarantine.detail`: every absolute path in the text (a missing file, a decoder's message, a
  traceback's frames) is cut to its last component, `/home/me/clips/a.mp4` -> `a.mp4`.
"""

from __future__ import annotations

import re
import urllib.parse

from curation.manifest import local_path
from schemas.records import Quarantine, Record, Video

LOCAL_PREFIX = "local:"
# Query parameters that carry credentials in signed URLs (S3, GCS, Azure SAS, generic tokens).
SECRET_PARAMS = re.compile(r"(signature|credential|token|secret|password|passwd|api[_-]?key|^sig$|^key$)", re.I)
# An absolute POSIX path not inside a URL: a `/` at the start or after a space, quote, bracket,
# `=` or `,` (never after `:`, `/` or a word character, as in `https://host/a`).
_ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[\s'\"(\[=,]))(/[^\s'\"()\[\],;]+)")


def public_uri(uri: str) -> str:
    """The form of a source uri a published row carries (see the module docstring)."""
    if local_path(uri) is not None:  # a local file, as the build reads the manifest
        path = urllib.parse.unquote(uri.removeprefix("file://")).rstrip("/")
        return LOCAL_PREFIX + (path.rsplit("/", 1)[-1] or "unnamed")
    parts = urllib.parse.urlsplit(uri)
    if not parts.netloc:
        return uri  # youtube:ID and the like
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                                    if not SECRET_PARAMS.search(k)])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_local_paths(text: str) -> str:
    """`text` with each absolute local path cut to its last component (URLs are left alone)."""
    text = text.replace("file://", "")
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def public_record(record: Record) -> Record:
    """The record as a shard publishes it; unchanged unless it carries a local path."""
    if isinstance(record, Video):
        uri = public_uri(record.uri)
        return record if uri == record.uri else record.model_copy(update={"uri": uri})
    if isinstance(record, Quarantine):
        detail = redact_local_paths(record.detail)
        return record if detail == record.detail else record.model_copy(update={"detail": detail})
    return record
