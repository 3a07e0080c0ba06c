"""Transcripts on disk, keyed by (video sha256, model, transcription settings).

`<root>/<key[:2]>/<key>.json`, written atomically, so a video redone for any other reason (a new
dialogue prompt, a changed routing rule) is not transcribed again, and a killed run leaves no half
entry. A damaged or foreign entry reads as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from curation.speech.transcribe import Transcript

# Bump when the audio decoding or the transcript's content changes for the same settings.
TRANSCRIPT_VERSION = "2"  # 2: 16-bit samples, the resampler flushed


def transcript_key(video_sha256: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"video": video_sha256, "settings": settings, "version": TRANSCRIPT_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class TranscriptCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Transcript | None:
        try:
            entry = json.loads(self.path_for(key).read_text(encoding="utf-8"))
            return Transcript.model_validate(entry["transcript"]) if entry.get("key") == key else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError):
            return None

    def put(self, key: str, transcript: Transcript) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"key": key, "transcript": transcript.model_dump(mode="json")}, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
