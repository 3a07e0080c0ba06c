"""Transcripts on disk, keyed by (video sha256, model, transcription settings).

Entries of a `curation.json_store.JsonStore` (atomic; a damaged or foreign entry reads as a
miss), so a video redone for any other reason (a new dialogue prompt, a changed routing rule) is
not transcribed again, and a killed run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from curation.json_store import JsonStore
from curation.speech.transcribe import Transcript

# Bump when the audio decoding or the transcript's content changes for the same settings.
TRANSCRIPT_VERSION = "2"  # 2: 16-bit samples, the resampler flushed


def transcript_key(video_sha256: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"video": video_sha256, "settings": settings, "version": TRANSCRIPT_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class TranscriptCache:
    def __init__(self, root: str | Path):
        self.entries = JsonStore(root)

    def path_for(self, key: str) -> Path:
        return self.entries.path_for(key)

    def get(self, key: str) -> Transcript | None:
        entry = self.entries.get(key)
        try:
            return None if entry is None else Transcript.model_validate(entry["transcript"])
        except (KeyError, TypeError, ValidationError):
            return None

    def put(self, key: str, transcript: Transcript) -> None:
        self.entries.put(key, {"transcript": transcript.model_dump(mode="json")})
