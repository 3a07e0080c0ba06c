"""Episodes: turn timeline, where questions and answers land, and skipped videos."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.skips import Skip
from curation.video import frames
from schemas import NO_REPLY, Dialogue
from tests.conftest import dialogue_row
from training.data.episodes import EpisodeConfig, build_episode, decode_episode_frames


def every_s(step_s: float):
    """A timeline given as data, so placement rules are tested apart from the frame module."""
    def timeline(duration_s: float, seconds_per_frame: float, max_frames: int) -> list[float]:
        n = min(max_frames, int(duration_s // step_s))
        return [step_s * (i + 1) for i in range(n)]
    return timeline


def bikes(**overrides) -> Dialogue:
    return Dialogue.model_validate(dialogue_row(**overrides))


def in_some_window(dialogue: Dialogue, time_s: float) -> bool:
    return any(s <= time_s <= e for s, e in (r.reply_span for r in dialogue.references))


def test_turn_time_is_last_frame_and_questions_enter_at_first_turn_at_or_after():
    ep = build_episode(bikes(), "v.mp4", EpisodeConfig(seconds_per_frame=1.0), every_s(1.0))
    assert [t.frame_times_s for t in ep.turns][:2] == [(1.0, 2.0), (3.0, 4.0)]
    assert [t.time_s for t in ep.turns] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert ep.turns[0].questions == ("Who walks past the cars?",)  # asked at 0 s
    assert ep.turns[2].questions == ("What is behind the bollards?",)  # asked at 6 s -> turn at 6 s
    assert all(not t.questions for i, t in enumerate(ep.turns) if i not in (0, 2))


def test_answer_sits_at_the_end_of_its_window_by_default_and_at_the_start_on_request():
    row = dialogue_row()
    row["references"][1]["reply_span"] = [6.0, 10.0]
    dialogue = Dialogue.model_validate(row)
    end = build_episode(dialogue, "v.mp4", EpisodeConfig(seconds_per_frame=1.0), every_s(1.0))
    start = build_episode(dialogue, "v.mp4", EpisodeConfig(seconds_per_frame=1.0, answer_position="start"),
                          every_s(1.0))
    assert [t.reply != NO_REPLY for t in end.turns] == [True, False, False, False, True]
    assert end.turns[4].reply == "A bicycle chained to a railing."
    assert start.turns[2].reply == "A bicycle chained to a railing."
    # window [1.2, 3.0] holds only the turn at 2 s: both positions choose it
    assert end.turns[0].reply == start.turns[0].reply == "A man in a dark suit."


def test_no_reply_exactly_outside_every_window():
    dialogue = bikes()
    ep = build_episode(dialogue, "v.mp4", EpisodeConfig(seconds_per_frame=1.0, frames_per_turn=1), every_s(1.0))
    for turn in ep.turns:
        if not in_some_window(dialogue, turn.time_s):
            assert turn.reply == NO_REPLY, turn
    replies = [(t.time_s, t.reply) for t in ep.turns if t.reply != NO_REPLY]
    assert replies == [(3.0, "A man in a dark suit."), (10.0, "A bicycle chained to a railing.")]


def test_window_shorter_than_a_turn_goes_to_the_first_turn_after_it_opens():
    ep = build_episode(bikes(), "v.mp4", EpisodeConfig(), every_s(2.0))  # turns at 4, 8 s
    assert ep.turns[0].time_s == 4.0 and ep.turns[0].reply == "A man in a dark suit."
    assert ep.late_answers == 1  # window [1.2, 3.0] ends before the turn at 4 s: counted


def test_immediate_reply_sits_at_the_question_turn():
    row = dialogue_row()
    row["references"].append({"question_id": "bikes-mq-0-q1", "question": "What is behind the bollards?",
                              "answer": "Nothing yet but cars.", "reply_span": [6.0, 7.0],
                              "immediate": True})
    ep = build_episode(Dialogue.model_validate(row), "v.mp4", EpisodeConfig(seconds_per_frame=1.0),
                       every_s(1.0))
    assert ep.turns[2].questions and ep.turns[2].reply == "Nothing yet but cars."


def test_questions_after_the_frame_cap_are_dropped_and_counted():
    ep = build_episode(bikes(), "v.mp4", EpisodeConfig(seconds_per_frame=1.0, max_frames=4), every_s(1.0))
    assert [t.time_s for t in ep.turns] == [2.0, 4.0]
    assert ep.dropped_questions == ("bikes-mq-0-q1",) and ep.dropped_answers == 1


def test_missing_video_is_a_skip_not_a_substitute(tmp_path):
    ep = build_episode(bikes(), tmp_path / "gone.mp4", EpisodeConfig(), every_s(2.0))
    result = decode_episode_frames(ep, 56 * 56, decode_frames=lambda *a: pytest.fail("decoded"))
    assert isinstance(result, Skip) and result.reason == "video_missing"


def test_undecodable_video_is_skipped_with_a_reason(samples_dir: Path):
    for bad in ("truncated.mp4", "not_a_video.mp4", "empty.mp4"):
        ep = build_episode(bikes(), samples_dir / "bad" / bad, EpisodeConfig(), frames.frame_timeline)
        result = decode_episode_frames(ep, 56 * 56, frames.decode_frames)
        assert isinstance(result, Skip), bad


def test_sample_video_frames_follow_the_published_timeline(samples_dir: Path):
    cfg = EpisodeConfig()
    ep = build_episode(bikes(), samples_dir / "videos" / "bikes.mp4", cfg, frames.frame_timeline)
    times = ep.frame_times_s
    assert times == list(frames.frame_timeline(10.0, 2.0, 90))
    assert all(len(t.frame_times_s) == 2 for t in ep.turns[:-1])
    pixels = decode_episode_frames(ep, 56 * 56, frames.decode_frames)
    assert not isinstance(pixels, Skip) and len(pixels) == len(times)
    assert all(p.dtype.name == "uint8" and p.shape[2] == 3 and p.shape[0] * p.shape[1] <= 56 * 56
               for p in pixels)


def sample_bikes(**overrides) -> Dialogue:
    """bikes-d1 of the sample corpus: a mid-video question whose immediate reply ("nothing so
    far") and answer ("a bicycle") share the last turn of a 10 s clip at 2 s per frame."""
    row = dialogue_row(dialogue_id="bikes-d1", kind="multi_question", user_turns=[
        {"question_id": "bikes-d1-q0", "time_s": 0.0, "text": "Who is walking along here?"},
        {"question_id": "bikes-d1-q2", "time_s": 7.5, "text": "What is chained up near the bollards?"}],
        references=[
        {"question_id": "bikes-d1-q0", "question": "Who is walking along here?",
         "answer": "A man in a dark suit walks between the parked cars.", "reply_span": [1.2, 3.0]},
        {"question_id": "bikes-d1-q2", "question": "What is chained up near the bollards?",
         "answer": "Nothing has been chained up so far.", "reply_span": [7.5, 8.5], "immediate": True},
        {"question_id": "bikes-d1-q2", "question": "What is chained up near the bollards?",
         "answer": "A bicycle is locked to a railing.", "reply_span": [7.5, 10.0]}], **overrides)
    return Dialogue.model_validate(row)


def test_an_immediate_reply_never_shares_a_turn_with_the_answer_that_contradicts_it():
    from curation.video.frames import frame_timeline

    ep = build_episode(sample_bikes(), "v.mp4", EpisodeConfig(), frame_timeline)
    assert [t.time_s for t in ep.turns] == [2.0, 6.0, 8.0]  # 10 s at 2 s per frame: three turns
    assert ep.turns[2].reply == "A bicycle is locked to a railing."
    assert not any("so far" in t.reply and "bicycle" in t.reply for t in ep.turns)
    assert (ep.superseded_answers, ep.merged_answers, ep.moved_answers, ep.dropped_answers) == (1, 0, 0, 0)


def test_a_colliding_answer_moves_inside_its_window_before_anything_merges():
    row = dialogue_row(references=[
        {"question_id": "bikes-mq-0-q0", "question": "Who walks past the cars?", "answer": "A man.",
         "reply_span": [0.0, 4.0]},
        {"question_id": "bikes-mq-0-q0", "question": "Who walks past the cars?", "answer": "A woman.",
         "reply_span": [3.5, 4.0]},
        {"question_id": "bikes-mq-0-q1", "question": "What is behind the bollards?", "answer": "A bike.",
         "reply_span": [6.0, 10.0]},
        {"question_id": "bikes-mq-0-q1", "question": "What is behind the bollards?", "answer": "A bench.",
         "reply_span": [9.0, 9.5]}])
    dialogue = Dialogue.model_validate(row)
    ep = build_episode(dialogue, "v.mp4", EpisodeConfig(seconds_per_frame=1.0, frames_per_turn=1), every_s(1.0))
    replies = {t.time_s: t.reply for t in ep.turns if not t.is_silent}
    # "A man." steps back inside [0, 4] so "A woman." keeps 4 s; "A bike." steps back from 10 s
    # to 8 s, inside [6, 10], so "A bench." gets 9 s: every answer inside its window, in order.
    assert replies == {3.0: "A man.", 4.0: "A woman.", 8.0: "A bike.", 9.0: "A bench."}
    assert (ep.moved_answers, ep.merged_answers, ep.superseded_answers, ep.late_answers) == (2, 0, 0, 0)
    # turns at 4, 8, 10 s: the man's and the woman's windows share one turn and merge in order;
    # the bike still steps back, and the bench (no turn inside [9, 9.5]) is late at 10 s
    coarse = build_episode(dialogue, "v.mp4", EpisodeConfig(), every_s(2.0))
    assert [t.reply for t in coarse.turns] == ["A man. A woman.", "A bike.", "A bench."]
    assert (coarse.moved_answers, coarse.merged_answers, coarse.late_answers) == (1, 1, 1)
    # every reference is on a turn of its own, merged into one, superseded, or dropped: counted
    counted = coarse.merged_answers + coarse.superseded_answers + coarse.dropped_answers
    assert sum(not t.is_silent for t in coarse.turns) == len(dialogue.references) - counted



def test_the_frame_cap_follows_the_interval_unless_set():
    assert EpisodeConfig().frame_cap == 90 and EpisodeConfig(seconds_per_frame=1.0).frame_cap == 180
    assert EpisodeConfig(seconds_per_frame=1.0, max_frames=8).frame_cap == 8
