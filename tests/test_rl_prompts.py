"""RL prompts: 20-60 s stretches with the dialogue before each as context, and their split."""

from __future__ import annotations

from collections import Counter

import pytest

from curation.video.frames import frame_timeline
from schemas import Dialogue
from tests.conftest import dialogue_row
from training.data.episodes import EpisodeConfig
from training.data.rl_prompts import (
    RLPromptConfig,
    build_rl_prompts,
    dialogue_stretches,
    split_prompts,
    stretch_bounds,
    stretch_episode,
)

CFG = RLPromptConfig()


def long_dialogue(video_id: str = "long", duration_s: float = 130.0, dialogue_id: str | None = None) -> Dialogue:
    """One question at 0 s, an answer window every 10 s."""
    did = dialogue_id or f"{video_id}-d0"
    refs = [{"question_id": f"{did}-q0", "question": "What happens?", "answer": f"Event {k}.",
             "reply_span": [10.0 * k, 10.0 * k + 5.0]} for k in range(int(duration_s // 10))]
    return Dialogue.model_validate(dialogue_row(
        dialogue_id=did, video_id=video_id, kind="single_question", duration_s=duration_s,
        user_turns=[{"question_id": f"{did}-q0", "time_s": 0.0, "text": "What happens?"}], references=refs))


def test_stretches_tile_the_video_in_20_to_60_s_pieces():
    assert stretch_bounds(130.0, CFG) == [(0.0, 40.0), (40.0, 80.0), (80.0, 130.0)]  # 10 s rest joins
    assert stretch_bounds(92.7, CFG) == [(0.0, 40.0), (40.0, 92.7)]  # FACTS.md's average web video
    assert stretch_bounds(105.0, CFG) == [(0.0, 40.0), (40.0, 80.0), (80.0, 105.0)]
    assert stretch_bounds(10.0, CFG) == [(0.0, 10.0)]  # shorter than 20 s: the whole clip
    for length in (20.0, 33.3, 61.0, 99.9, 164.4, 180.0):
        pieces = [e - s for s, e in stretch_bounds(length, CFG)]
        assert all(20.0 - 1e-6 <= p <= 60.0 + 1e-6 for p in pieces), (length, pieces)
        assert sum(pieces) == pytest.approx(length)
    with pytest.raises(ValueError, match="must not exceed"):
        RLPromptConfig(stretch_s=50.0)


def test_a_stretch_carries_the_dialogue_before_it_as_context_replies():
    dialogue = long_dialogue()
    stretches = dialogue_stretches(dialogue, CFG, EpisodeConfig(), frame_timeline)
    assert [(s.start_s, s.end_s) for s in stretches] == [(0.0, 40.0), (40.0, 80.0), (80.0, 130.0)]
    assert stretches[0].context == ()
    # answers sit at the end of their windows: the turns at 6, 14, ..., 38 s hold events 0-3
    assert stretches[1].context_replies == ("Event 0.", "Event 1.", "Event 2.", "Event 3.")
    assert all(c.time_s < 40.0 for c in stretches[1].context)
    assert stretches[2].context_replies[-1] == "Event 7."
    streamed = stretch_episode(stretches[1], "v.mp4", EpisodeConfig(), frame_timeline)
    context = streamed.episode.turns[:streamed.context_turns]
    assert tuple(t.reply for t in context if not t.is_silent) == stretches[1].context_replies
    assert all(40.0 <= t.time_s < 80.0 for t in streamed.episode.turns[streamed.context_turns:])
    # scored on the windows still open at its first turn (42 s): events 4-12
    assert [r.answer for r in streamed.references] == [f"Event {k}." for k in range(4, 13)]


def test_a_stretch_with_no_answer_is_dropped_and_counted():
    dialogue = long_dialogue(duration_s=130.0)
    quiet = dialogue.model_copy(update={"references": [r for r in dialogue.references if r.reply_span[0] < 40]})
    dropped = Counter()
    kept = dialogue_stretches(quiet, CFG, EpisodeConfig(), frame_timeline, dropped)
    assert [(s.start_s, s.end_s) for s in kept] == [(0.0, 40.0)] and dropped == {"no_answer_in_stretch": 2}


def test_the_frame_interval_and_cap_bound_the_stretches():
    dialogue = long_dialogue(duration_s=300.0)
    at_2s = dialogue_stretches(dialogue, CFG, EpisodeConfig(), frame_timeline)
    assert at_2s[-1].end_s == 180.0  # 90 frames at 2 s: nothing past 180 s is streamed
    at_1s = dialogue_stretches(dialogue, CFG, EpisodeConfig(seconds_per_frame=1.0), frame_timeline)
    assert [(s.start_s, s.end_s) for s in at_1s] == [(s.start_s, s.end_s) for s in at_2s]


def test_validation_prompts_are_held_out_by_video():
    dialogues = [long_dialogue(f"v{i:03d}") for i in range(60)]
    prompts = build_rl_prompts(dialogues, CFG, EpisodeConfig(), frame_timeline)
    train_videos = {s.dialogue.video_id for s in prompts.train}
    val_videos = {s.dialogue.video_id for s in prompts.validation}
    assert not train_videos & val_videos and len(train_videos | val_videos) == 60
    assert 1 <= len(val_videos) <= 14  # about 10%
    assert prompts.summary()["prompts_train"] == len(prompts.train) == 3 * len(train_videos)
    assert build_rl_prompts(dialogues, CFG, EpisodeConfig(), frame_timeline).validation == prompts.validation
    one = build_rl_prompts(dialogues[:1], CFG, EpisodeConfig(), frame_timeline)
    assert len(one.train) == 3 and one.validation == []  # a single RL video trains
    two_train, two_val = split_prompts(one.train + build_rl_prompts(dialogues[1:2], CFG, EpisodeConfig(),
                                                                    frame_timeline).train, CFG)
    assert two_train and two_val  # two videos: one each side


def test_the_streamed_index_numbers_and_splits_the_prompts_as_the_whole_split_does(tmp_path):
    """`RLPromptIndex` over a lazily read split (several row groups): the same training and
    validation prompts, in the same order, as `build_rl_prompts` over every dialogue at once, and
    no dialogue kept once the index is built."""
    import gc

    import pyarrow.parquet as pq

    from tests.sample_corpus import build_corpus
    from training.data.lazy_split import LazySplit
    from training.data.rl_prompt_index import RLPromptIndex

    dialogues = [long_dialogue(f"v{i:03d}", duration_s=30.0 + 7 * i) for i in range(40)]
    root = build_corpus(tmp_path / "c", {"rl": [d.model_dump(mode="json") for d in dialogues]}, [])
    shard = root / "data" / "dialogues" / "rl-00000.parquet"
    pq.write_table(pq.read_table(shard), shard, row_group_size=7)  # 6 row groups: the pass crosses them
    gc.collect()
    before = sum(type(o) is Dialogue for o in gc.get_objects())
    index = RLPromptIndex(LazySplit(root, "rl"), CFG, EpisodeConfig(), frame_timeline)
    gc.collect()
    assert sum(type(o) is Dialogue for o in gc.get_objects()) == before  # two integers per prompt, no dialogue
    whole = build_rl_prompts(dialogues, CFG, EpisodeConfig(), frame_timeline)
    assert [index.train[i][0] for i in range(len(index.train))] == whole.train
    assert [index.validation[i][0] for i in range(len(index.validation))] == whole.validation
    assert whole.validation and index.summary() == whole.summary()
    assert index.validation.head(1)[0][0] == whole.validation[0] and len(index.validation.head(1)) == 1
