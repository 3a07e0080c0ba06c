"""One video through every stage, with per-stage timings, budgets and crash capture.

Plain Python (no Prefect): the batch task in `build_corpus` runs this on `flows.video_pool`'s
threads. Each expensive resource has its own bound (downloads, CPU, LLM), shared by all batches of
a process, so a download stall never starves scene detection and the LLM server stays busy. Each
stage runs under its watchdog budget (`curation.watchdog`, `WatchdogConfig`), taken once it holds
its resource slot: over budget, the video is quarantined as `stage_timeout`.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config import CorpusConfig, WatchdogConfig, WorkerLimits
from curation.corpus.results import VideoResult, write_raw_replies
from curation.llm.client import LLMClient
from curation.manifest import ManifestRow
from curation.skips import Skip
from curation.speech.route import SOURCE_TEXT, route_speech
from curation.text.descriptions import caption_frame_times, describe_video
from curation.text.dialogues import DialogueOutcome, generate_dialogues
from curation.text.source_text import clip_segments, read_source_segments
from curation.video.acquire import acquire_video
from curation.video.probe import admit, probe_video
from curation.video.single_pass import decode_video
from curation.watchdog import Budget, Interrupted, StageTimeout, stage_budget
from schemas.records import Quarantine, Video

# Write errors that say the output location is full or read-only: no later video would fare
# better, so the run stops (with a clear message) instead of quarantining every video.
OUTPUT_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@dataclass
class Limits:
    downloads: threading.BoundedSemaphore
    cpu: threading.BoundedSemaphore
    llm: threading.BoundedSemaphore

    @classmethod
    def from_workers(cls, w: WorkerLimits) -> Limits:
        return cls(threading.BoundedSemaphore(w.downloads), threading.BoundedSemaphore(w.cpu),
                   threading.BoundedSemaphore(w.llm))


@dataclass
class PipelineContext:
    config: CorpusConfig
    corpus_root: Path
    client: LLMClient
    limits: Limits
    fingerprint: str
    on_event: Callable[[str, str], None] = lambda event, video_id: None

    @property
    def videos_dir(self) -> Path:
        return self.corpus_root / "videos"

    @property
    def transcripts_dir(self) -> Path:
        return self.corpus_root / "work" / "transcripts"


def keep_raw_replies(outcome: DialogueOutcome, corpus_root: Path, video_id: str) -> DialogueOutcome:
    """Write the raw replies of the video's failed dialogue requests under the work folder and
    point each quarantine row at its file."""
    paths = {dialogue_id: write_raw_replies(corpus_root, video_id, dialogue_id, replies)
             for dialogue_id, replies in outcome.raw_replies.items()}
    rows = [row.model_copy(update={"raw_replies": paths[row.item_id]}) if row.item_id in paths else row
            for row in outcome.quarantined]
    return dataclasses.replace(outcome, quarantined=rows)


class _Stopped(Exception):
    """Raised inside `run_video` when a stage skipped or crashed; carries the quarantine row."""

    def __init__(self, row: Quarantine):
        self.row = row


@dataclass
class VideoRun:
    """One video's way through the stages; `flows.video_pool` reads `current` to find a stage stuck
    past its budget and `abandon`s it."""

    video_id: str
    watchdog: WatchdogConfig | None = None
    duration_s: float | None = None  # known after the probe; scales the later stages' budgets
    durations_s: dict[str, float] = field(default_factory=dict)
    current: Budget | None = None  # the running stage's budget
    _slot: threading.BoundedSemaphore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Apart from the wall time above (which includes waiting for a pool slot): the wait, and the
    # CPU time of this thread while the stage ran. Decoders run single-threaded in this thread,
    # so a video stage's CPU is all here; the LLM client's own thread is not.
    wait_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str, fn: Callable[..., Any], *args: Any, limit=None) -> Any:
        started = time.perf_counter()
        cpu_started = None
        try:
            with self._held(limit):
                self.wait_s[name] = self.wait_s.get(name, 0.0) + time.perf_counter() - started
                cpu_started = time.thread_time()
                budget_s = self.watchdog.budget_s(name, self.duration_s) if self.watchdog else None
                with stage_budget(name, budget_s) as budget:
                    self.current = budget
                    try:
                        out = fn(*args)
                    finally:
                        self.current = None
        except Interrupted:  # the run is stopping: no result, so the next run redoes the video
            raise
        except StageTimeout as error:
            raise _Stopped(Skip(name, "stage_timeout", f"{error} (watchdog.* in the config sets budgets)")
                           .to_quarantine(self.video_id, self.video_id)) from None
        except OSError as error:
            if error.errno in OUTPUT_REFUSED:  # the disk, not the video: stop the whole run
                raise
            raise _Stopped(_crash(name, self.video_id, error)) from None
        except Exception as error:  # a crash: counted apart from skips, the run goes on
            raise _Stopped(_crash(name, self.video_id, error)) from None
        finally:
            self.durations_s[name] = self.durations_s.get(name, 0.0) + time.perf_counter() - started
            if cpu_started is not None:
                self.cpu_s[name] = self.cpu_s.get(name, 0.0) + time.thread_time() - cpu_started
        if isinstance(out, Skip):
            raise _Stopped(out.to_quarantine(self.video_id, self.video_id))
        return out

    @contextmanager
    def _held(self, limit: threading.BoundedSemaphore | None):
        if limit is None:
            yield
            return
        limit.acquire()
        with self._lock:
            self._slot = limit
        try:
            yield
        finally:
            with self._lock:
                slot, self._slot = self._slot, None
            if slot is not None:
                slot.release()

    def abandon(self) -> None:
        """Give back the resource slot a stuck stage holds, so the batch keeps its full width; the
        stuck thread then finds its slot already returned and does not return it twice."""
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()


def _crash(stage: str, video_id: str, error: BaseException) -> Quarantine:
    detail = f"{type(error).__name__}: {error}"
    tb = traceback.extract_tb(error.__traceback__)
    if tb:
        detail += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return Skip(stage, "crash", detail).to_quarantine(video_id, video_id, "error")


def run_video(row: ManifestRow, ctx: PipelineContext, run: VideoRun | None = None) -> VideoResult | None:
    """Every stage for one video: a skip, crash or overrun becomes a quarantine row. None when the
    run is stopping (SIGTERM/SIGINT): nothing is written, so the next run redoes the video. Raises
    only for an output disk that refuses writes."""
    cfg = ctx.config
    run = run or VideoRun(row.video_id, cfg.watchdog)
    ctx.on_event("start", row.video_id)
    video: Video | None = None
    route = None
    segments, scenes, dialogues, quarantine = [], [], [], []
    counts: Counter = Counter()
    try:
        acquired = run.stage("acquire", acquire_video, row, ctx.videos_dir, cfg.acquire, limit=ctx.limits.downloads)
        probe = run.stage("probe", probe_video, acquired.path, limit=ctx.limits.cpu)
        run.duration_s = probe.duration_s
        run.stage("admit", lambda: admit(probe, row.source, cfg.admission) or True)
        video = Video(
            video_id=row.video_id, source=row.source, uri=row.uri,
            path=str(Path(acquired.path).resolve().relative_to(ctx.corpus_root.resolve())),
            sha256=acquired.sha256, bytes=acquired.bytes, duration_s=probe.duration_s, fps=probe.fps,
            width=probe.width, height=probe.height, codec=probe.codec, has_audio=probe.has_audio,
            licence=row.licence, metadata=dict(row.metadata),
        )
        # The text dialogues are written from: the row's own, else the speech when there is enough
        # of it, else captions. Decided before the decode pass, which keeps caption frames only
        # for videos that will be captioned.
        route, source_segments = SOURCE_TEXT, []
        if not row.text_uri:
            speech = run.stage("asr", route_speech, acquired.path, video, cfg.asr, ctx.transcripts_dir,
                               cfg.workers.cpu, limit=ctx.limits.cpu)
            route, source_segments = speech.route, speech.segments
            counts.update(speech.counts)
        counts[route.count_key()] += 1
        # One decode of the file (issue 22) gives the scenes, the frames check and, for a video
        # to be captioned, each scene's caption frames; the later stages only read its result.
        wants_captions = (lambda found: caption_frame_times(found, cfg.descriptions)) \
            if route.route == "captions" else None
        decoded = run.stage("scenes", decode_video, acquired.path, row.video_id, probe.duration_s, cfg.scenes,
                            cfg.frames, wants_captions, cfg.descriptions.caption_max_pixels, limit=ctx.limits.cpu)
        scenes = decoded.scenes
        run.stage("frames", lambda: decoded.timeline)
        if row.text_uri:
            source_segments = run.stage("source_text", read_source_segments, row.text_uri, row.video_id,
                                        row.text_format, row.text_origin)
            source_segments = clip_segments(source_segments, probe.duration_s)
        segments = run.stage("descriptions", describe_video, video, acquired.path, scenes, source_segments,
                             ctx.client, cfg.descriptions, counts, decoded.captions, limit=ctx.limits.llm)
        outcome = run.stage("dialogues", lambda: keep_raw_replies(
            generate_dialogues(video, segments, scenes, ctx.client, cfg.dialogues), ctx.corpus_root, row.video_id),
            limit=ctx.limits.llm)
        dialogues, quarantine = list(outcome.dialogues), list(outcome.quarantined)
        counts.update({f"text_filter_{k}": v for k, v in outcome.text_filter.items() if v})
        counts.update({f"dialogues_{k}": v for k, v in outcome.tally.items() if v})
        if not dialogues:
            quarantine.append(Skip("dialogues", "no_valid_dialogue",
                                   f"all {len(quarantine)} generated dialogues were rejected")
                              .to_quarantine(row.video_id, row.video_id))
    except _Stopped as stopped:
        quarantine.append(stopped.row)
    except Interrupted:
        ctx.on_event("interrupted", row.video_id)
        return None
    # An admitted video keeps its row, scenes and segments even when no dialogue survived: they are
    # facts about the video that the QA figures count; the trainer only follows dialogues.
    ctx.on_event("done" if dialogues else "failed", row.video_id)
    return VideoResult(
        video_id=row.video_id, config_fingerprint=ctx.fingerprint, video=video, text_route=route, segments=segments,
        scenes=scenes, dialogues=dialogues, quarantine=quarantine, stage_durations_s=run.durations_s,
        counts=dict(counts), stage_wait_s=run.wait_s, stage_cpu_s=run.cpu_s,
    )
