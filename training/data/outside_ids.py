"""Ids that come from outside files (benchmarks, released data) and the safe names we use inside.

Outside ids are keys, never file names: ProactiveVideoQA's TV ids look like
`show_frames=show_s05e24_seg02_clip_25.mp4%Q1`. They are kept verbatim wherever they are written
back (prediction lines, exported records), and mapped to a safe internal name only where our own
records need one (`schemas.SafeId`: dialogue, video and question ids, which may become file names).
"""

from __future__ import annotations

import hashlib
import re

from schemas import check_safe_id

_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_CHARS = 100  # leaves room for the hash inside SafeId's 160 characters


def safe_id_for(outside_id: str) -> str:
    """`outside_id` itself when it is already a safe id; else a readable slug plus the first 10
    hex digits of its sha1, so two outside ids that slug alike never share an internal name."""
    try:
        return check_safe_id(outside_id)
    except ValueError:
        pass
    slug = _UNSAFE_RUN.sub("_", outside_id).replace("..", "_").strip("._-")[:_SLUG_CHARS].strip("._-")
    digest = hashlib.sha1(outside_id.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else f"id-{digest}"
