"""The chat template: labels only on assistant replies, NO REPLY placement, truncation, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation.video.frames import decode_frames, frame_timeline
from schemas import NO_REPLY, Dialogue
from tests.conftest import dialogue_row
from training.data.chat_template import (
    IGNORE_INDEX,
    ChatTemplateError,
    TemplateConfig,
    TurnRenderer,
    check_chat_template,
    collate_episodes,
    encode_episode,
)
from training.data.episodes import EpisodeConfig, build_episode
from training.model import load_image_processor
from training.tiny import build_tiny_model, build_tiny_tokenizer

PIXELS = 56 * 56


@pytest.fixture(scope="module")
def tokenizer():
    row = dialogue_row()
    texts = [t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]]
    return build_tiny_tokenizer(texts)


@pytest.fixture(scope="module")
def image_processor():
    return load_image_processor("/nonexistent-so-defaults", PIXELS)


def every_2s(duration_s, seconds_per_frame, max_frames):
    return [2.0 * (i + 1) for i in range(min(max_frames, int(duration_s // 2)))]


def sample_dialogue() -> Dialogue:
    row = dialogue_row()
    row["references"][0]["reply_span"] = [1.2, 4.0]  # every window holds a turn at 2 s x 2 frames
    return Dialogue.model_validate(row)


def episode(frames_per_turn: int = 2):
    dialogue = sample_dialogue()
    return dialogue, build_episode(dialogue, "v.mp4", EpisodeConfig(frames_per_turn=frames_per_turn), every_2s)


def gray_frames(n: int, h: int = 28, w: int = 84) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def split_messages(tokenizer, ids: list[int]) -> list[tuple[str, int, int]]:
    """(role, start, end) of each message, found independently of the renderer: at <|im_start|>."""
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = [i for i, t in enumerate(ids) if t == start_id] + [len(ids)]
    out = []
    for a, b in zip(starts, starts[1:], strict=False):
        role = tokenizer.decode(ids[a + 1:b]).split("\n", 1)[0]
        out.append((role, a, b))
    return out


def check_labels_token_by_token(tokenizer, enc, turns):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = split_messages(tokenizer, enc.input_ids)
    assert [m[0] for m in messages] == ["system"] + ["user", "assistant"] * len(turns)
    for (role, a, b), turn in zip(messages[2::2], turns, strict=True):
        header = len(tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
        body = enc.input_ids[a + header:b]
        end = body.index(eos) + 1  # the reply and its <|im_end|>; the trailing newline is not trained
        for i in range(a, b):
            labelled = a + header <= i < a + header + end
            assert (enc.labels[i] != IGNORE_INDEX) == labelled, (role, i)
            if labelled:
                assert enc.labels[i] == enc.input_ids[i]
        assert tokenizer.decode(body[:end - 1]) == turn.reply
    for role, a, b in messages[:2] + messages[1::2]:
        if role in ("system", "user"):
            assert all(enc.labels[i] == IGNORE_INDEX for i in range(a, b)), role


def test_only_assistant_replies_are_labelled_and_no_reply_outside_windows(tokenizer, image_processor):
    dialogue, ep = episode()
    renderer = TurnRenderer(tokenizer)
    enc = encode_episode(ep, gray_frames(len(ep.frame_times_s)), renderer, image_processor, TemplateConfig())
    check_labels_token_by_token(tokenizer, enc, ep.turns)
    for turn in ep.turns:
        inside = any(s <= turn.time_s <= e for s, e in (r.reply_span for r in dialogue.references))
        assert inside or turn.reply == NO_REPLY, turn
    assert ep.late_answers == 0
    assert [t.reply for t in ep.turns] == ["A man in a dark suit.", NO_REPLY, "A bicycle chained to a railing."]
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert enc.input_ids.count(pad) == int(enc.image_grid_thw.prod(dim=1).sum()) // 4


def test_sample_episode_from_the_real_video(tokenizer, image_processor, samples_dir):
    from training.data.episodes import decode_episode_frames

    dialogue = sample_dialogue()
    ep = build_episode(dialogue, samples_dir / "videos" / "bikes.mp4", EpisodeConfig(), frame_timeline)
    pixels = decode_episode_frames(ep, PIXELS, decode_frames)
    enc = encode_episode(ep, pixels, TurnRenderer(tokenizer), image_processor, TemplateConfig())
    check_labels_token_by_token(tokenizer, enc, ep.turns)
    for turn in ep.turns:
        inside = any(s <= turn.time_s <= e for s, e in (r.reply_span for r in dialogue.references))
        assert inside or turn.reply == NO_REPLY, turn
    assert sum(t.reply != NO_REPLY for t in ep.turns) == len(dialogue.references) - ep.dropped_answers


def test_left_truncation_drops_whole_turns_keeps_system_and_carries_questions(tokenizer, image_processor):
    _, ep = episode()
    renderer = TurnRenderer(tokenizer)
    frames = gray_frames(len(ep.frame_times_s))
    full = encode_episode(ep, frames, renderer, image_processor, TemplateConfig())
    cut = encode_episode(ep, frames, renderer, image_processor,
                         TemplateConfig(max_length_tokens=len(full.input_ids) - 1))
    assert cut.first_turn == 1 and len(cut.input_ids) < len(full.input_ids)
    system = renderer.system_ids()
    assert cut.input_ids[:len(system)] == system
    text = tokenizer.decode(cut.input_ids)
    assert "Who walks past the cars?" in text  # the dropped turn's question moved forward
    assert "A man in a dark suit." not in text
    assert cut.image_grid_thw.shape[0] == len(frames) - 2
    assert cut.pixel_values.shape[0] == int(cut.image_grid_thw.prod(dim=1).sum())
    check_labels_token_by_token(tokenizer, cut, ep.turns[1:])
    tiny = encode_episode(ep, frames, renderer, image_processor, TemplateConfig(max_length_tokens=20))
    assert tiny.reason == "turn_too_long"


def test_no_reply_weight_applies_only_to_silent_turns(tokenizer, image_processor):
    _, ep = episode()
    enc = encode_episode(ep, gray_frames(len(ep.frame_times_s)), TurnRenderer(tokenizer), image_processor,
                         TemplateConfig(no_reply_loss_weight=0.25))
    weights = {w for w, lab in zip(enc.loss_weights, enc.labels, strict=True) if lab != IGNORE_INDEX}
    assert weights == {1.0, 0.25}
    assert all(w == 0.0 for w, lab in zip(enc.loss_weights, enc.labels, strict=True) if lab == IGNORE_INDEX)


def test_weighted_sft_loss_equals_a_hand_computation_on_a_two_turn_episode(tokenizer, image_processor):
    from training.data.episodes import Episode, Turn
    from training.model import mrope_inputs
    from training.sft import batch_loss, weighted_token_loss

    reply = "A man in a dark suit."
    episode = Episode("d", "v", "v.mp4", (
        Turn(0, 2.0, (0.0, 2.0), ("Who walks past the cars?",)),  # silent: NO REPLY
        Turn(1, 4.0, (2.0, 4.0), (), reply)))
    renderer = TurnRenderer(tokenizer)
    enc = encode_episode(episode, gray_frames(4), renderer, image_processor, TemplateConfig(no_reply_loss_weight=0.25))
    batch = collate_episodes([enc], tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = build_tiny_model(tokenizer).eval()
    ids = batch["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                       image_grid_thw=batch["image_grid_thw"], **mrope_inputs(model, ids, renderer.image_pad_id)).logits
        trainer = batch_loss(model, batch, "cpu", renderer.image_pad_id)
    # By hand, without the encoder's weights: the labelled positions form two runs, the silent turn's
    # "NO REPLY<|im_end|>" and the reply's; each token t at position p costs -log softmax(logits[p - 1])[t],
    # weighted 0.25 on the first run and 1 on the second, summed and divided by the sum of the weights.
    labelled = [p for p, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    cut = next(i for i in range(1, len(labelled)) if labelled[i] != labelled[i - 1] + 1)
    runs = {0.25: labelled[:cut], 1.0: labelled[cut:]}
    assert tokenizer.decode([enc.input_ids[p] for p in runs[0.25]]) == f"{NO_REPLY}<|im_end|>"
    assert tokenizer.decode([enc.input_ids[p] for p in runs[1.0]]).replace(" ", "") == f"{reply}<|im_end|>".replace(" ", "")
    row = logits[0].double()
    cost = {w: [float(torch.logsumexp(row[p - 1], 0) - row[p - 1, enc.input_ids[p]]) for p in ps] for w, ps in runs.items()}
    by_hand = sum(w * c for w, cs in cost.items() for c in cs) / sum(w * len(cs) for w, cs in cost.items())
    unweighted = sum(sum(cs) for cs in cost.values()) / len(labelled)
    assert abs(by_hand - unweighted) > 1e-3  # the two turns' losses differ, so the weight shows
    assert weighted_token_loss(logits, batch["labels"], batch["loss_weights"]).item() == pytest.approx(by_hand, rel=1e-5)
    assert trainer.item() == pytest.approx(by_hand, rel=1e-5)
    # weight 1 (published): the plain mean over labelled tokens
    plain = collate_episodes([encode_episode(episode, gray_frames(4), renderer, image_processor, TemplateConfig())],
                             tokenizer.pad_token_id)
    assert weighted_token_loss(logits, plain["labels"], plain["loss_weights"]).item() == pytest.approx(unweighted, rel=1e-5)


def test_data_summary_shows_the_no_reply_weights_share_of_the_loss():
    from training.data.summary import episode_summary

    dialogue = sample_dialogue()

    def label_tokens(reply):  # a stand-in tokenizer count: 3 tokens for NO REPLY, 5 for a reply
        return 3 if reply == NO_REPLY else 5

    plain = episode_summary([dialogue], EpisodeConfig(), every_2s)
    summary = episode_summary([dialogue], EpisodeConfig(), every_2s, label_tokens, 0.25)
    silent, spoken = plain["turns"] - plain["reply_turns"], plain["reply_turns"]
    # frames at 2..10 s, two a turn: turns at 4, 8, 10 s; the answers (windows [1.2, 4], [7.5, 10])
    # sit at the last turn of their window, 4 and 10 s, so the turn at 8 s is the silent one
    assert (silent, spoken) == (1, 2)
    # unweighted 3 / (3 + 2 * 5) = 3 / 13; at 0.25: 0.75 / (0.75 + 10) = 0.75 / 10.75
    assert summary["no_reply_label_tokens"] == 3 and summary["reply_label_tokens"] == 10
    assert summary["no_reply_loss_share_unweighted"] == round(3 / 13, 4)
    assert summary["no_reply_loss_share"] == round(0.75 / 10.75, 4)
    assert "no_reply_loss_share" not in plain


def test_collated_batch_runs_through_a_tiny_qwen(tokenizer, image_processor):
    renderer = TurnRenderer(tokenizer)
    _, ep2 = episode()
    _, ep1 = episode(frames_per_turn=1)
    encs = [encode_episode(ep2, gray_frames(5), renderer, image_processor, TemplateConfig()),
            encode_episode(ep1, gray_frames(5, 56, 56), renderer, image_processor, TemplateConfig())]
    batch = collate_episodes(encs, tokenizer.pad_token_id)
    width = max(len(e.input_ids) for e in encs)
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(e.input_ids) for e in encs]
    assert batch["image_grid_thw"].shape == (10, 3)
    model = build_tiny_model(tokenizer)
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")})
    assert out.logits.shape[:2] == (2, width)


def test_turn_by_turn_ids_concatenate_to_the_whole_conversation(tokenizer):
    renderer = TurnRenderer(tokenizer)
    ids = renderer.system_ids() + renderer.user_turn_ids([3, 3], "Q?")
    reply, labels = renderer.assistant_turn("Yes.")
    ids += reply
    text = renderer.render([{"role": "system", "content": [{"type": "text", "text": renderer.system_prompt}]},
                            {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                         {"type": "text", "text": "Q?"}]},
                            {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]}])
    assert ids == renderer.expand_images(renderer.encode(text), [3, 3])
    assert reply[len(reply) - len(renderer.assistant_suffix_ids()):] == renderer.assistant_suffix_ids()
    assert labels[-1] == IGNORE_INDEX and labels[-2] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_tokenizer_without_chat_template_is_refused(tokenizer):
    bare = build_tiny_tokenizer(["x"])
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        check_chat_template(bare)


def test_a_template_that_does_not_split_into_turns_fails_loudly(tokenizer, image_processor):
    counting = build_tiny_tokenizer(["x"])
    # Numbers each message: a turn rendered alone differs from the same turn inside the episode.
    counting.chat_template = tokenizer.chat_template.replace(
        "<|im_start|>{{ message['role'] }}\n", "<|im_start|>{{ message['role'] }} {{ loop.index }}\n")
    _, ep = episode()
    with pytest.raises(ChatTemplateError, match="differ"):
        encode_episode(ep, gray_frames(5), TurnRenderer(counting), image_processor, TemplateConfig())


def test_training_forward_uses_the_same_3d_positions_as_the_streaming_loop(tokenizer, image_processor):
    from training.model import mrope_inputs
    from training.streaming import mrope_position_ids

    renderer = TurnRenderer(tokenizer)
    _, ep = episode()
    enc = encode_episode(ep, gray_frames(5), renderer, image_processor, TemplateConfig())
    batch = collate_episodes([enc], tokenizer.pad_token_id)
    model = build_tiny_model(tokenizer)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
    grids = [tuple(g) for g in batch["image_grid_thw"].tolist()]
    positions, _ = mrope_position_ids(enc.input_ids, grids, renderer.image_pad_id, image_processor.merge_size)
    with torch.no_grad():
        trained = model(**inputs, **mrope_inputs(model, batch["input_ids"], renderer.image_pad_id)).logits
        explicit = model(**inputs, position_ids=positions[:, None, :]).logits
        plain = model(**inputs).logits
    assert torch.allclose(trained, explicit, atol=1e-5)
    if mrope_inputs(model, batch["input_ids"], renderer.image_pad_id):
        # This transformers needs the hint: without it the forward falls back to 1-D positions.
        assert not torch.allclose(trained, plain, atol=1e-5)
