"""Descriptions: source segments renumbered and tied to scenes; scenes captioned from their frames
through the real LLM client (loopback stub and the sample's replay file); failures counted."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
from PIL import Image

from curation.llm.client import LLMClient, LLMConfig
from curation.skips import Skip
from curation.text.descriptions import (
    DescriptionConfig,
    caption_scenes,
    describe_video,
    scene_frame_times,
)
from curation.text.source_text import read_source_segments
from curation.video.frames import smart_resize
from curation.video.scenes import SceneConfig, detect_scenes
from curation.video.synthetic import make_video
from schemas.records import Scene, Segment, Video
from tests.conftest import SAMPLES
from tests.openai_stub import Reply, StubServer

CFG = DescriptionConfig(frames_per_scene=2, caption_max_pixels=84 * 112)


def video_record(video_id: str, duration_s: float) -> Video:
    return Video(video_id=video_id, source="generated", uri=f"{video_id}.mp4", sha256="0" * 64, bytes=1,
                 duration_s=duration_s, fps=10.0, width=160, height=120, codec="h264", has_audio=False)


def scenes_of(video_id: str, bounds: list[float]) -> list[Scene]:
    return [Scene(video_id=video_id, scene_id=i, start_s=a, end_s=b, detector="adaptive")
            for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))]


@pytest.fixture(scope="module")
def three_scene_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("desc") / "three.mp4"
    make_video(path, [2.0, 2.0, 2.0], size=(160, 120), fps=10)
    return path


def stub_client(stub: StubServer) -> LLMClient:
    return LLMClient(LLMConfig(base_url=stub.url, api_key="sk-test", model="stub-vl", max_retries=0, timeout_s=10))


def caption_reply(body: dict) -> Reply:
    text = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
    # No frame times in the caption: the whole-text filter refuses timestamps in generated text.
    return Reply.json({"caption": f"Scene described from: {text.split(' of ', 1)[1].split(' (')[0]}"})


def test_source_segments_are_renumbered_in_time_order_and_tied_to_scenes():
    segments = read_source_segments(SAMPLES / "text" / "bikes.csv", "bikes")
    shuffled = random.Random(0).sample(segments, len(segments))
    shuffled = [s.model_copy(update={"segment_id": f"x{i}"}) for i, s in enumerate(shuffled)]
    scenes = scenes_of("bikes", [0.0, 1.2, 3.04, 5.5, 7.5, 10.0])
    out = describe_video(video_record("bikes", 10.0), "unused.mp4", scenes, shuffled, client=None, cfg=CFG)
    assert [s.segment_id for s in out] == [f"bikes-s{i:04d}" for i in range(6)]
    assert [s.start_s for s in out] == sorted(s.start_s for s in segments)
    # 3.0-4.0 overlaps scene 1 by 0.04 s and scene 2 by 0.96 s: it belongs to scene 2.
    assert [s.scene_id for s in out] == [0, 1, 2, 2, 3, 4]


def test_each_scene_is_captioned_from_its_own_frames(three_scene_video):
    scenes = scenes_of("three", [0.0, 2.0, 4.0, 6.0])
    with StubServer(caption_reply) as stub, stub_client(stub) as client:
        out = describe_video(video_record("three", 6.0), three_scene_video, scenes, [], client, CFG)
    assert [(s.segment_id, s.start_s, s.end_s, s.scene_id, s.origin) for s in out] == [
        ("three-s0000", 0.0, 2.0, 0, "caption"), ("three-s0001", 2.0, 4.0, 1, "caption"),
        ("three-s0002", 4.0, 6.0, 2, "caption")]
    bodies = sorted(stub.requests, key=lambda b: json.dumps(b["messages"][1]["content"][-1]))
    for scene, body in zip(scenes, bodies, strict=True):
        parts = body["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]  # frames first
        times = ", ".join(f"{t:.1f} s" for t in scene_frame_times(scene, 2))
        assert f"Frames {times} of scene {scene.scene_id}" in parts[-1]["text"]
        url = parts[0]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "JPEG" and image.size[::-1] == smart_resize(120, 160, CFG.caption_max_pixels)
        assert body["response_format"]["json_schema"]["name"] == "scene_caption"


def test_a_failed_caption_drops_only_its_scene(three_scene_video):
    def script(body: dict) -> Reply:
        text = body["messages"][1]["content"][-1]["text"]
        return Reply.error(400, "refused") if "of scene 1 " in text else caption_reply(body)

    scenes = scenes_of("three", [0.0, 2.0, 4.0, 6.0])
    with StubServer(script) as stub, stub_client(stub) as client:
        captions = caption_scenes(video_record("three", 6.0), three_scene_video, scenes, client, CFG)
    assert [(s.segment_id, s.scene_id) for s in captions.segments] == [("three-s0000", 0), ("three-s0001", 2)]
    assert captions.failed == {1: "llm_rejected"}


def test_all_captions_failed_is_a_skip(three_scene_video):
    scenes = scenes_of("three", [0.0, 2.0, 4.0, 6.0])
    with StubServer(Reply.text("not json at all")) as stub, stub_client(stub) as client:
        out = describe_video(video_record("three", 6.0), three_scene_video, scenes, [], client, CFG)
    assert isinstance(out, Skip) and (out.stage, out.reason) == ("descriptions", "llm_invalid_json")
    assert "3 llm_invalid_json" in out.detail


def test_an_llm_outage_for_every_caption_is_reported_as_the_outage(three_scene_video):
    # llm_failed is retryable in the flow: the video is redone once the server is back.
    scenes = scenes_of("three", [0.0, 2.0, 4.0, 6.0])
    with StubServer(Reply.error(500)) as stub, stub_client(stub) as client:
        out = describe_video(video_record("three", 6.0), three_scene_video, scenes, [], client, CFG)
    assert isinstance(out, Skip) and out.reason == "llm_failed" and "3 llm_failed" in out.detail


def test_undecodable_frames_are_counted_and_need_no_call(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"not a video" * 100)
    with StubServer(caption_reply) as stub, stub_client(stub) as client:
        out = describe_video(video_record("fake", 4.0), path, scenes_of("fake", [0.0, 2.0, 4.0]), [], client, CFG)
    assert isinstance(out, Skip) and out.reason == "undecodable_frames" and "2 undecodable_frames" in out.detail
    assert stub.requests == []


def test_no_source_text_and_no_scene_is_a_skip():
    out = describe_video(video_record("v", 4.0), "unused.mp4", [], [], client=None, cfg=CFG)
    assert isinstance(out, Skip) and out.reason == "no_scenes"


def test_the_sample_video_without_text_is_captioned_through_the_replay_file(tmp_path):
    path = SAMPLES / "videos" / "generated_six_scenes.mp4"
    scenes = detect_scenes(path, "generated_six_scenes", SceneConfig(), 48.0)
    assert [(s.start_s, s.end_s) for s in scenes] == [(0, 8), (8, 14), (14, 24), (24, 32), (32, 39), (39, 48)]
    config = LLMConfig(backend="replay", model="replay-sample", replay_path=str(SAMPLES / "replay.jsonl"))
    with LLMClient(config) as client:
        out = describe_video(video_record("generated_six_scenes", 48.0), path, scenes, [], client,
                             DescriptionConfig())
        assert client.usage_snapshot()["failures"] == 0
    assert all(isinstance(s, Segment) and s.origin == "caption" for s in out)
    assert [s.scene_id for s in out] == list(range(6))
    assert "Mandelbrot" in out[2].text and "navy" in out[5].text
