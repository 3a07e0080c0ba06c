"""`NO REPLY` verified as a draft in the turn's own forward (issue 23): the same greedy outputs and
the same sampled tokens per seed as plain decoding, and after a rejected draft the same KV cache.

The random tiny model never says `NO REPLY`, so most checks add a next-token bias to it
(`training.tiny.add_next_token_bias`: after the generation prompt prefer `NO`, after `NO` prefer
` REPLY`, after ` REPLY` prefer `<|im_end|>`) of sizes that make it accept the whole draft on some
turns, part of it on others and none on the rest; each check asserts that all these cases occurred.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from schemas import Dialogue
from tests.conftest import dialogue_row
from training.data.chat_template import TurnRenderer
from training.data.episodes import EpisodeConfig, build_episode
from training.model import load_image_processor
from training.rl.rollout import ProcessorBits, RolloutConfig, rollout_group
from training.streaming import (
    StreamConfig,
    StreamingSession,
    StreamTurn,
    latency_split,
    no_reply_draft_ids,
    stream_turns,
)
from training.tiny import add_next_token_bias, build_tiny_model, build_tiny_tokenizer

PIXELS = 56 * 56
# Bias sizes against the random model's logit spread (~0.16 std): (after the prompt, after NO,
# after REPLY). None: the bare random model (rejects the draft at its first token).
GREEDY_BIASES = [None, (0.5, 0.6, 0.6), (0.5, 1.0, 0.0), (0.5, 1.0, 0.5)]
SAMPLING_BIAS = (2.5, 2.5, 2.5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bits():
    row = dialogue_row()
    tokenizer = build_tiny_tokenizer([t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]])
    return TurnRenderer(tokenizer), load_image_processor("/nonexistent-so-defaults", PIXELS)


def stream(n: int = 5) -> list[StreamTurn]:
    rng = np.random.default_rng(0)
    return [StreamTurn(time_s=2.0 * (i + 1), frames=[rng.integers(0, 255, (28, 56, 3), dtype=np.uint8) for _ in range(2)],
                       text="Who walks past the cars?" if i == 2 else "") for i in range(n)]


def biased_model(renderer: TurnRenderer, seed: int, bias):
    model = build_tiny_model(renderer.tokenizer, seed=seed).eval()
    if bias is not None:
        no, reply, eos = no_reply_draft_ids(renderer)
        prompt_end = renderer.user_turn_ids([1])[-1]
        add_next_token_bias(model, {prompt_end: {no: bias[0]}, no: {reply: bias[1]}, reply: {eos: bias[2]}})
    return model


def assert_same_stream(drafted, plain):
    assert [(t.text, t.token_ids, t.cut) for t in drafted.turns] == [(t.text, t.token_ids, t.cut) for t in plain.turns]
    assert torch.equal(drafted.input_ids, plain.input_ids)
    assert torch.equal(drafted.assistant_mask, plain.assistant_mask)
    assert torch.equal(drafted.position_ids, plain.position_ids)
    assert torch.allclose(drafted.logprobs, plain.logprobs, atol=1e-4)


def test_greedy_outputs_equal_plain_decoding_on_tiny_models(bits):
    renderer, processor = bits
    config = StreamConfig(max_new_tokens_per_turn=6)
    accepted = set()
    for seed in range(5):
        for bias in GREEDY_BIASES:
            model = biased_model(renderer, seed, bias)
            drafted = stream_turns(model, renderer, processor, stream(), config)
            plain = stream_turns(model, renderer, processor, stream(), config.model_copy(update={"draft_no_reply": False}))
            assert_same_stream(drafted, plain)
            assert all(t.draft_accepted == 0 for t in plain.turns)
            accepted |= {t.draft_accepted for t in drafted.turns}
            if bias is None:
                assert not any(t.draft_accepted for t in drafted.turns)  # a random model never says NO REPLY
    assert accepted == {0, 1, 2, 3}  # rejected at the first token, after NO, after NO REPLY; all taken


def test_sampled_tokens_follow_the_seed_exactly(bits):
    renderer, processor = bits
    config = StreamConfig(max_new_tokens_per_turn=6, temperature=1.2, top_k=10)  # FACTS.md: GRPO sampling
    accepted = set()
    for seed in range(5):
        model = biased_model(renderer, seed, SAMPLING_BIAS)
        drafted = stream_turns(model, renderer, processor, stream(6), config, torch.Generator().manual_seed(seed))
        plain = stream_turns(model, renderer, processor, stream(6), config.model_copy(update={"draft_no_reply": False}),
                             torch.Generator().manual_seed(seed))
        assert_same_stream(drafted, plain)
        accepted |= {t.draft_accepted for t in drafted.turns}
    assert accepted == {0, 1, 2, 3}


def cache_tensors(session: StreamingSession) -> list[torch.Tensor]:
    return [x for layer in session.cache.layers for x in (layer.keys, layer.values)]


def test_cache_after_a_rejected_draft_is_plain_decodings(bits):
    renderer, processor = bits
    model = biased_model(renderer, 1, (0.5, 0.6, 0.6))  # takes NO, then rejects REPLY
    drafted = StreamingSession(model, renderer, processor, StreamConfig(max_new_tokens_per_turn=6))
    plain = StreamingSession(model, renderer, processor, StreamConfig(max_new_tokens_per_turn=6, draft_no_reply=False))
    for turn in stream(3):
        got, want = drafted.step(turn), plain.step(turn)
        assert got.draft_accepted == 1 and got.token_ids == want.token_ids
        assert drafted.fed == plain.fed == drafted.cache.get_seq_length() == plain.cache.get_seq_length()
        for a, b in zip(cache_tensors(drafted), cache_tensors(plain), strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(drafted.result().logprobs, plain.result().logprobs, atol=1e-4)


def test_frames_first_then_the_decision_equals_one_forward_per_turn(bits):
    """Frames ingested in their own forward, then the decision forward with the draft, against
    the whole turn in one forward decoded token by token: same tokens, same cache, same log-probs."""
    renderer, processor = bits
    config = StreamConfig(max_new_tokens_per_turn=6)
    one_forward = config.model_copy(update={"ingest_frames_first": False, "draft_no_reply": False})
    for seed in range(5):
        model = biased_model(renderer, seed, GREEDY_BIASES[seed % len(GREEDY_BIASES)])
        split = StreamingSession(model, renderer, processor, config)
        whole = StreamingSession(model, renderer, processor, one_forward)
        for turn in stream():
            got, want = split.step(turn), whole.step(turn)
            assert got.token_ids == want.token_ids and got.ingest_s > 0 and want.ingest_s == 0
            assert split.fed == whole.fed
            for a, b in zip(cache_tensors(split), cache_tensors(whole), strict=True):
                assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
        assert_same_stream(split.result(), whole.result())
    no_frames = StreamingSession(model, renderer, processor, config).step(StreamTurn(time_s=1.0, frames=[], text="Hi?"))
    assert no_frames.ingest_s == 0  # nothing to ingest: the turn is one decision forward


def test_token_cap_shorter_than_the_draft_and_must_reply_turns(bits):
    renderer, processor = bits
    model = biased_model(renderer, 1, (0.5, 1.0, 0.5))  # says NO REPLY whenever it may
    feed = stream(3)
    feed[1].must_reply = True
    for cap in (1, 2, 6):
        config = StreamConfig(max_new_tokens_per_turn=cap)
        drafted = stream_turns(model, renderer, processor, feed, config)
        plain = stream_turns(model, renderer, processor, feed, config.model_copy(update={"draft_no_reply": False}))
        assert_same_stream(drafted, plain)
        assert [t.draft_accepted for t in drafted.turns] == [min(cap, 3), 0, min(cap, 3)]
        assert [t.cut for t in drafted.turns][::2] == [cap < 3] * 2


def test_sample_eval_set_predictions_equal_plain_decoding(bits, samples_dir: Path):
    from training.eval.evaluate import EvalConfig, predict_record, resolve_video
    from training.eval.proactive_format import read_gold

    renderer, _ = bits
    cfg = EvalConfig(max_frames=6, max_pixels=PIXELS, max_new_tokens_per_turn=6)
    processor = load_image_processor("/nonexistent-so-defaults", cfg.max_pixels)
    gold = read_gold(samples_dir / "eval" / "web.jsonl")
    accepted = set()
    for seed, bias in [(1, (0.5, 1.0, 0.5)), (1, (0.5, 0.6, 0.6)), (2, None)]:
        model = biased_model(renderer, seed, bias)
        for record in gold:
            video = resolve_video(samples_dir / "videos", record.video)
            line, turns = predict_record(record, video, model, renderer, processor, cfg)
            plain_line, plain_turns = predict_record(record, video, model, renderer, processor,
                                                     cfg.model_copy(update={"draft_no_reply": False}))
            assert line == plain_line
            assert [t.token_ids for t in turns] == [t.token_ids for t in plain_turns]
            accepted |= {t.draft_accepted for t in turns}
    assert accepted >= {0, 1, 3}


def test_rollouts_sample_the_same_tokens_with_and_without_the_draft(bits):
    renderer, processor = bits
    model = biased_model(renderer, 2, SAMPLING_BIAS)
    row = dialogue_row()
    episode = build_episode(Dialogue.model_validate(row), "v.mp4", EpisodeConfig(),
                            lambda duration_s, spf, n: [2.0 * (i + 1) for i in range(min(n, int(duration_s // 2)))])
    frames = [np.random.default_rng(i).integers(0, 255, (28, 56, 3), dtype=np.uint8) for i in range(len(episode.frame_times_s))]
    cfg = RolloutConfig(n=2, max_new_tokens_per_turn=6, seed=1)  # GRPO's temperature and top-k
    drafted = rollout_group(model, ProcessorBits(renderer, processor, PIXELS), episode, cfg, frames)
    plain = rollout_group(model, ProcessorBits(renderer, processor, PIXELS), episode,
                          cfg.model_copy(update={"draft_no_reply": False}), frames)
    for a, b in zip(drafted, plain, strict=True):
        assert_same_stream(a, b)
    assert {t.draft_accepted for r in drafted for t in r.turns} == {0, 1, 2, 3}


def test_latency_split_separates_silent_and_spoken_turns(bits):
    renderer, processor = bits
    model = biased_model(renderer, 4, (0.5, 1.0, 0.5))
    feed = stream(4)
    feed[2].must_reply = True  # a forced prefix: spoken
    result = stream_turns(model, renderer, processor, feed, StreamConfig(max_new_tokens_per_turn=4))
    split = latency_split(result.turns)
    assert [t.silent for t in result.turns] == [True, True, False, True]
    assert (split["turns"], split["silent_turns"], split["spoken_turns"]) == (4, 3, 1)
    assert split["spoken_latency_median_s"] == result.turns[2].latency_s
    assert 0 < split["silent_latency_median_s"] <= split["silent_latency_p95_s"]
    assert latency_split([])["silent_turns"] == 0
