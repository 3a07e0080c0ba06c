"""The streaming loop on the tiny Qwen2.5-VL: cached == re-encoded, exact M-RoPE positions, the
token cap closing a turn in place, forced prefixes and context replies, SFT's tokens."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from schemas import Dialogue
from tests.conftest import dialogue_row, every_2s
from training.data.chat_template import TemplateConfig, encode_episode
from training.data.episodes import EpisodeConfig, build_episode
from training.streaming import (
    StreamConfig,
    StreamingSession,
    StreamTurn,
    episode_stream_turns,
    latency_stats,
    mrope_position_ids,
    stream_turns,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bits(tiny_policy):
    model, processor_bits, _ = tiny_policy
    return model.eval(), processor_bits.renderer, processor_bits.image_processor


def frames(n: int, seed: int = 0, h: int = 28, w: int = 56) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def turns(n: int = 5) -> list[StreamTurn]:
    shots = frames(2 * n)
    return [StreamTurn(time_s=2.0 * (i + 1), frames=shots[2 * i:2 * i + 2],
                       text="Who walks past the cars?" if i in (0, 3) else "") for i in range(n)]


def full_forward_logprobs(model, renderer, result) -> torch.Tensor:
    """Log-probs of every token from ONE forward over the whole history, positions computed by the
    model itself (its own get_rope_index, fed the image-token types)."""
    ids = result.input_ids[None]
    types = (ids == renderer.image_pad_id).int()
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=result.pixel_values, image_grid_thw=result.image_grid_thw,
                       mm_token_type_ids=types).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[0, 1:, None])[:, 0]


def test_cached_stream_equals_reencoding_and_a_full_forward(bits):
    model, renderer, processor = bits
    config = StreamConfig(max_new_tokens_per_turn=6)
    cached = stream_turns(model, renderer, processor, turns(), config)
    again = stream_turns(model, renderer, processor, turns(), config.model_copy(update={"reencode": True}))
    assert [t.text for t in cached.turns] == [t.text for t in again.turns]
    assert torch.equal(cached.input_ids, again.input_ids)
    assert torch.equal(cached.position_ids, again.position_ids)
    assert torch.allclose(cached.logprobs, again.logprobs, atol=1e-4)
    # The same history encoded at once, with the model's own M-RoPE: same log-probs, same positions.
    mask = cached.assistant_mask[1:]
    assert mask.sum() == sum(len(t.token_ids) for t in cached.turns) > 0
    full = full_forward_logprobs(model, renderer, cached)
    assert torch.allclose(full[mask], cached.logprobs[1:][mask], atol=1e-4)
    ids = cached.input_ids[None]
    own, _ = model.model.get_rope_index(ids, mm_token_type_ids=(ids == renderer.image_pad_id).int(),
                                        image_grid_thw=cached.image_grid_thw)
    assert torch.equal(own[:, 0], cached.position_ids)
    assert cached.position_ids[0].max() < len(cached.input_ids)  # images compress positions: 3-D, not 1-D


def test_mrope_positions_by_hand():
    pad = 9
    # text, text, one image of grid (1, 4, 6) -> 2x3 merged tokens, text
    positions, after = mrope_position_ids([1, 2] + [pad] * 6 + [3], [(1, 4, 6)], pad, merge_size=2, start=10)
    assert positions[:, :2].tolist() == [[10, 11]] * 3
    assert positions[0, 2:8].tolist() == [12] * 6  # temporal axis
    assert positions[1, 2:8].tolist() == [12, 12, 12, 13, 13, 13]  # rows
    assert positions[2, 2:8].tolist() == [12, 13, 14, 12, 13, 14]  # columns
    assert positions[:, 8].tolist() == [15] * 3 and after == 16  # advances by max(h, w) = 3


def test_token_cap_closes_the_reply_in_its_own_turn(bits):
    model, renderer, processor = bits
    cap = 4
    result = stream_turns(model, renderer, processor, turns(3), StreamConfig(max_new_tokens_per_turn=cap))
    eos, ids = renderer.eos_id, result.input_ids.tolist()
    assert [t.time_s for t in result.turns] == [2.0, 4.0, 6.0]  # reply time = its turn's time
    assert all(t.cut and len(t.token_ids) == cap and eos not in t.token_ids for t in result.turns)
    assistant_headers = renderer.encode("<|im_start|>assistant\n")
    starts = [i for i in range(len(ids)) if ids[i:i + len(assistant_headers)] == assistant_headers]
    assert len(starts) == 3  # one assistant turn per user turn, no continuation turn
    for start, turn in zip(starts, result.turns, strict=True):
        body = start + len(assistant_headers)
        assert ids[body:body + cap] == turn.token_ids and ids[body + cap] == eos
        assert result.assistant_mask[body:body + cap].all() and not result.assistant_mask[body + cap]
    assert ids[-1] == eos and int(result.assistant_mask.sum()) == 3 * cap


def test_end_of_turn_token_ends_a_reply_and_is_trained(bits):
    model, renderer, processor = bits
    eos = renderer.eos_id
    hook = model.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
        -1, torch.tensor([eos]), torch.full((*out.shape[:-1], 1), 1e4)))
    try:
        result = stream_turns(model, renderer, processor, turns(2), StreamConfig(max_new_tokens_per_turn=50))
    finally:
        hook.remove()
    assert [(t.text, t.token_ids, t.cut) for t in result.turns] == [("", [eos], False)] * 2
    assert result.input_ids[result.assistant_mask].tolist() == [eos, eos]


def test_must_reply_prefix_is_fed_not_sampled(bits):
    model, renderer, processor = bits
    feed = turns(2)
    feed[1].must_reply = True
    result = stream_turns(model, renderer, processor, feed, StreamConfig(max_new_tokens_per_turn=3))
    prefix = renderer.encode("I must reply.")
    ids = result.input_ids.tolist()
    at = next(i for i in range(len(ids)) if ids[i:i + len(prefix)] == prefix)
    assert not result.assistant_mask[at:at + len(prefix)].any()
    assert ids[at + len(prefix):at + len(prefix) + 3] == result.turns[1].token_ids
    assert "I must reply." not in result.turns[1].text


def test_context_replies_give_exactly_the_sft_tokens(bits):
    """Feeding every turn its reference reply reproduces SFT's tokenisation and images."""
    model, renderer, processor = bits
    row = dialogue_row()
    row["references"][0]["reply_span"] = [1.2, 4.0]
    dialogue = Dialogue.model_validate(row)

    episode = build_episode(dialogue, "v.mp4", EpisodeConfig(), every_2s)
    shots = frames(len(episode.frame_times_s))
    sft = encode_episode(episode, shots, renderer, processor, TemplateConfig())
    fed = episode_stream_turns(episode, shots, context_turns=len(episode.turns))
    result = stream_turns(model, renderer, processor, fed)
    suffix = len(renderer.assistant_suffix_ids())
    assert result.input_ids.tolist() == sft.input_ids[:-suffix]
    assert torch.equal(result.pixel_values, sft.pixel_values)
    assert torch.equal(result.image_grid_thw, sft.image_grid_thw)
    assert not result.assistant_mask.any()
    assert [t.text for t in result.turns] == [t.reply for t in episode.turns]


def test_sampling_stays_in_the_top_k_and_follows_the_seed(bits):
    model, renderer, processor = bits
    config = StreamConfig(max_new_tokens_per_turn=8, temperature=1.2, top_k=3)

    def run(seed):
        return stream_turns(model, renderer, processor, turns(3), config, torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, c.input_ids)
    ids = a.input_ids[None]
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=a.pixel_values, image_grid_thw=a.image_grid_thw,
                       position_ids=a.position_ids[:, None]).logits[0, :-1]
    rank = (logits > logits.gather(-1, ids[0, 1:, None])).sum(-1)
    assert rank[a.assistant_mask[1:]].max() < 3


def test_latency_is_recorded_per_turn(bits):
    model, renderer, processor = bits
    result = stream_turns(model, renderer, processor, turns(3), StreamConfig(max_new_tokens_per_turn=2))
    stats = latency_stats([t.latency_s for t in result.turns])
    assert stats.count == 3 and all(t.latency_s > 0 for t in result.turns)
    assert 0 < stats.median_s <= stats.p95_s <= max(stats.per_turn_s)
    assert latency_stats([]).count == 0


def test_replies_never_sample_vision_or_turn_tokens(bits):
    from training.streaming import BANNED_IN_REPLIES, StreamConfig, StreamingSession

    model, renderer, image_processor = bits
    session = StreamingSession(model, renderer, image_processor, StreamConfig(temperature=1.0, top_k=0),
                               torch.Generator().manual_seed(0))
    vocab = renderer.tokenizer.get_vocab()
    banned = {vocab[t] for t in BANNED_IN_REPLIES if t in vocab}
    logits = torch.zeros(len(vocab))
    logits[list(banned)] = 50.0  # the policy wants nothing else
    picks = {session._pick(logits) for _ in range(50)}
    assert banned and not picks & banned


def test_frames_ingested_as_they_arrive_equal_the_whole_turn(bits):
    """A live caller feeds each frame as it arrives (`ingest`), then closes the turn with its text
    (`step`), or with its last frames: the same sequence, positions, cache, replies and log-probs as
    the whole turn given to `step`; a context turn with a fed reply too."""
    model, renderer, processor = bits
    shots = frames(9, seed=2)
    stream = [StreamTurn(time_s=2.0 * (i + 1), frames=shots[3 * i:3 * i + 3],
                         text="Who walks past the cars?" if i == 1 else "",
                         forced_reply="A man walks past." if i == 0 else None) for i in range(3)]
    config = StreamConfig(max_new_tokens_per_turn=6)
    whole, each, rest = (StreamingSession(model, renderer, processor, config) for _ in range(3))
    for turn in stream:
        want = whole.step(turn)
        for frame in turn.frames:  # each frame the moment it arrives
            assert each.ingest([frame]) > 0
        got = each.step(StreamTurn(turn.time_s, frames=[], text=turn.text, forced_reply=turn.forced_reply))
        rest.ingest(turn.frames[:1])  # the first frame early, the others with the turn's close
        late = rest.step(dataclasses.replace(turn, frames=turn.frames[1:]))
        assert got.token_ids == late.token_ids == want.token_ids and got.text == want.text
        assert got.ingest_s > 0 and late.ingest_s > 0
        for session in (each, rest):
            assert session.ids == whole.ids and session.fed == whole.fed
            for a, b in zip(session.cache.layers, whole.cache.layers, strict=True):
                assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)
    for session in (each, rest):
        got, want = session.result(), whole.result()
        assert torch.equal(got.position_ids, want.position_ids) and torch.equal(got.image_grid_thw, want.image_grid_thw)
        assert torch.equal(got.pixel_values, want.pixel_values)
        assert torch.allclose(got.logprobs, want.logprobs, atol=1e-4)
    with pytest.raises(ValueError, match=r"frame 1: expected an \(H, W, 3\) RGB array, got ndarray of shape \(28, 56\)"):
        each.ingest([shots[0], shots[0][..., 0]])  # a grayscale frame from a live caller
    with pytest.raises(ValueError, match="KV cache"):
        StreamingSession(model, renderer, processor, StreamConfig(reencode=True)).ingest(shots[:1])
