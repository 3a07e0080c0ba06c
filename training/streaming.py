"""The streaming decision loop: feed user turns one at a time, let the model reply or stay silent.

The system prompt, then per user turn its frames (separate image items) and any question text,
rendered by `training.data.chat_template.TurnRenderer` (the same tokens SFT trains on); then at most
`max_new_tokens_per_turn` tokens are generated, ending at `<|im_end|>`. The KV cache is kept across
turns: only the new tokens of each turn are encoded. `reencode=True` re-encodes the whole history
every turn instead (the baseline of `bench.streaming_latency`).

M-RoPE positions are computed here, explicitly, for every token (`mrope_position_ids`, Qwen2.5-VL's
rule: text tokens count up by one on all three axes; an image's tokens take (t, h, w) grid
positions offset by the running position, which then advances by max(h, w)). They are passed to
the model on every call, so cached decoding, a full re-encode and the trainer's log-prob
recomputation (`training.rl.rollout.token_logprobs`) all see the same positions without relying on
the model's internal `rope_deltas` state.

Departures from the published code (FACTS.md): a reply cut at the token cap is closed with
`<|im_end|>` in the same turn and keeps the turn's time (the public RL loop started another
assistant turn with no new frame, shifting reply times); the closing token is not a sampled one,
so it carries no policy loss. A forced "I must reply." prefix is fed, not sampled, and is left out
of the reply text. A `skip_inference` turn (ProactiveVideoQA's frame-input flag) is fed without
the assistant generation prompt and gets no reply; the next user turn follows it directly.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from training.data.chat_template import TurnRenderer, image_inputs, questions_text, tokens_per_image
from training.data.episodes import Episode

MUST_REPLY_PREFIX = "I must reply."  # FACTS.md: the public eval's forced prefix on must-reply turns


class StreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens_per_turn: int = Field(100, ge=1)  # FACTS.md: at most 100 new tokens per assistant turn
    temperature: float = Field(0.0, ge=0)  # 0 = greedy (FACTS.md: evaluation decodes greedily)
    top_k: int = Field(0, ge=0)  # 0 = no top-k filter (GRPO: 10, FACTS.md)
    reencode: bool = False  # True: re-encode the whole history every turn (baseline)
    must_reply_prefix: str = MUST_REPLY_PREFIX


@dataclass
class StreamTurn:
    """One user turn to feed: its time, frames, optional text; a known reply to feed instead of
    generating (context turns), or a forced reply prefix."""

    time_s: float
    frames: list[np.ndarray]
    text: str = ""
    must_reply: bool = False
    forced_reply: str | None = None
    skip_inference: bool = False  # feed the turn, generate nothing after it


@dataclass
class TurnReply:
    time_s: float
    text: str  # decoded reply without `<|im_end|>` (and without a forced prefix)
    token_ids: list[int]  # generated ids, `<|im_end|>` included when sampled
    cut: bool  # hit the token cap; closed with a non-sampled `<|im_end|>`
    latency_s: float  # from the turn's arrival (image preprocessing included) to its last token
    forced: bool = False  # a context turn fed with a known reply


@dataclass
class StreamResult:
    """The whole conversation as one sequence, enough to recompute log-probs exactly."""

    turns: list[TurnReply]
    input_ids: torch.Tensor  # (L,) system, user turns, replies, closing tokens, newlines
    assistant_mask: torch.Tensor  # (L,) bool: True on sampled tokens only
    logprobs: torch.Tensor  # (L,) float: log p(token | prefix) at temperature 1 where the mask is True, else 0
    position_ids: torch.Tensor  # (3, L) M-RoPE positions (t, h, w)
    pixel_values: torch.Tensor  # (patches, dim) all frames in turn order
    image_grid_thw: torch.Tensor  # (images, 3)


def mrope_position_ids(ids: list[int], grids_thw: list[tuple[int, int, int]], image_pad_id: int,
                       merge_size: int, start: int = 0) -> tuple[torch.Tensor, int]:
    """(3, len(ids)) M-RoPE positions of a chunk that starts at running position `start`, and the
    running position after it. Each maximal run of image pads is one image, in `grids_thw` order."""
    out = torch.empty(3, len(ids), dtype=torch.long)
    grids = iter(grids_thw)
    pos, i = start, 0
    while i < len(ids):
        if ids[i] != image_pad_id:
            out[:, i] = pos
            pos, i = pos + 1, i + 1
            continue
        t, h, w = next(grids)
        h, w = h // merge_size, w // merge_size
        n = t * h * w
        tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
        out[:, i:i + n] = torch.stack([tt, hh, ww]).reshape(3, -1) + pos
        pos, i = pos + max(h, w), i + n
    return out, pos


BANNED_IN_REPLIES = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                     "<|vision_pad|>", "<|im_start|>", "<|endoftext|>")


def banned_token_ids(tokenizer) -> list[int]:
    """Ids of BANNED_IN_REPLIES this tokenizer has (a per-token lookup: building the whole vocab
    dict of a real Qwen tokenizer would cost tens of ms per session)."""
    ids = {tokenizer.convert_tokens_to_ids(t) for t in BANNED_IN_REPLIES}
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


class StreamingSession:
    """One conversation's state: tokens so far, M-RoPE positions, images, and the KV cache."""

    def __init__(self, model, renderer: TurnRenderer, image_processor, config: StreamConfig,
                 generator: torch.Generator | None = None):
        self.model, self.renderer, self.image_processor, self.config = model, renderer, image_processor, config
        self.generator = generator
        self.merge_size = image_processor.merge_size
        self.device = next(model.parameters()).device
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.ids: list[int] = []
        self.mask: list[bool] = []
        self.logprobs: list[float] = []
        self.positions: list[torch.Tensor] = []
        self.pixels: list[torch.Tensor] = []
        self.grids: list[torch.Tensor] = []
        self.next_pos = 0
        self.cache = None
        self.fed = 0  # tokens already in the cache
        self.turns: list[TurnReply] = []
        self.trailing_suffix = 0  # tokens after the last reply's `<|im_end|>` (dropped by result())
        # Tokens a reply must never contain: an image pad with no image behind it breaks the
        # stream's M-RoPE positions; the others open turns or vision spans (HF's suppress_tokens).
        self.banned = torch.tensor(banned_token_ids(renderer.tokenizer), dtype=torch.long)
        self._append(renderer.system_ids(), [], sampled=False)

    # -------------------------------------------------------------- sequence bookkeeping
    def _append(self, ids: list[int], grids: list[tuple[int, int, int]], sampled: bool,
                logprobs: list[float] | None = None) -> None:
        pos, self.next_pos = mrope_position_ids(ids, grids, self.renderer.image_pad_id, self.merge_size,
                                                self.next_pos)
        self.ids += ids
        self.mask += [sampled] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)
        self.positions.append(pos)

    def _forward(self, start: int, pixel_values, grid_thw) -> torch.Tensor:
        """Encode tokens [start:] on top of the cache holding [:start]; the last position's logits."""
        ids = torch.tensor([self.ids[start:]], device=self.device)
        pos = self._positions_from(start).unsqueeze(1).to(self.device)
        out = self.model(input_ids=ids, position_ids=pos, pixel_values=pixel_values, image_grid_thw=grid_thw,
                         use_cache=True, logits_to_keep=1, **{self._cache_kw: self.cache})
        self.cache = getattr(out, "cache", None) or out.past_key_values
        self.fed = len(self.ids)
        return out.logits[0, -1].float()

    def _positions_from(self, start: int) -> torch.Tensor:
        chunks, total = [], len(self.ids)
        for chunk in reversed(self.positions):  # only the tail: decoding stays O(new tokens)
            if total <= start:
                break
            chunks.append(chunk)
            total -= chunk.shape[1]
        return torch.cat(chunks[::-1], dim=1)[:, start - total:]

    def _pick(self, logits: torch.Tensor) -> int:
        if len(self.banned):
            logits = logits.index_fill(-1, self.banned.to(logits.device), float("-inf"))
        if self.config.temperature == 0:
            return int(logits.argmax())
        scaled = logits / self.config.temperature
        if self.config.top_k:
            kth = torch.topk(scaled, min(self.config.top_k, scaled.numel())).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=self.generator))

    # -------------------------------------------------------------- one turn
    @torch.no_grad()
    def step(self, turn: StreamTurn) -> TurnReply | None:
        """Feed one user turn; its reply, or None for a `skip_inference` turn."""
        started = time.perf_counter()
        pixel_values = grid_thw = None
        counts: list[int] = []
        grids: list[tuple[int, int, int]] = []
        if turn.frames:
            pixel_values, grid_thw = image_inputs(turn.frames, self.image_processor)
            counts = tokens_per_image(grid_thw, self.merge_size)
            grids = [tuple(int(x) for x in g) for g in grid_thw]
            self.pixels.append(pixel_values)
            self.grids.append(grid_thw)
        prefix = self.renderer.encode(self.config.must_reply_prefix) if turn.must_reply else []
        if self.config.reencode:  # drop the cache: the whole history is encoded again
            self.cache, self.fed = None, 0
            pixel_values = torch.cat(self.pixels) if self.pixels else None
            grid_thw = torch.cat(self.grids) if self.grids else None
        if turn.skip_inference:
            self._append(self.renderer.user_turn_ids(counts, turn.text, generate=False), grids, sampled=False)
            self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
            self.trailing_suffix = 0
            return None
        self._append(self.renderer.user_turn_ids(counts, turn.text), grids, sampled=False)
        if turn.forced_reply is not None:
            ids, _ = self.renderer.assistant_turn(turn.forced_reply)
            self._append(ids, [], sampled=False)
            self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
            reply = TurnReply(turn.time_s, turn.forced_reply, [], False, time.perf_counter() - started, True)
            self.turns.append(reply)
            self.trailing_suffix = len(self.renderer.assistant_suffix_ids())  # the fed reply ends with it
            return reply
        self._append(prefix, [], sampled=False)
        logits = self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
        eos = self.renderer.eos_id
        generated: list[int] = []
        while True:
            token = self._pick(logits)
            self._append([token], [], sampled=True, logprobs=[float(torch.log_softmax(logits, -1)[token])])
            generated.append(token)
            if token == eos or len(generated) >= self.config.max_new_tokens_per_turn:
                break
            logits = self._forward(self.fed, None, None)
        cut = generated[-1] != eos
        if cut:
            self._append([eos], [], sampled=False)  # closes the turn; not a policy action
        # The closing newline enters the cache with the next turn's tokens.
        suffix = self.renderer.assistant_suffix_ids()
        self._append(suffix, [], sampled=False)
        self.trailing_suffix = len(suffix)
        text = self.renderer.tokenizer.decode([t for t in generated if t != eos], skip_special_tokens=True)
        reply = TurnReply(turn.time_s, text.strip(), generated, cut, time.perf_counter() - started)
        self.turns.append(reply)
        return reply

    def _to_device(self, x):
        return None if x is None else x.to(self.device)

    def result(self) -> StreamResult:
        # The trailing newline after the last reply belongs to no turn's loss; drop it.
        end = len(self.ids) - self.trailing_suffix
        dim = self.pixels[0].shape[-1] if self.pixels else 0
        return StreamResult(
            turns=list(self.turns),
            input_ids=torch.tensor(self.ids[:end], dtype=torch.long),
            assistant_mask=torch.tensor(self.mask[:end], dtype=torch.bool),
            logprobs=torch.tensor(self.logprobs[:end], dtype=torch.float32),
            position_ids=torch.cat(self.positions, dim=1)[:, :end],
            pixel_values=torch.cat(self.pixels) if self.pixels else torch.empty(0, dim),
            image_grid_thw=torch.cat(self.grids) if self.grids else torch.empty(0, 3, dtype=torch.long),
        )


def stream_turns(model, renderer: TurnRenderer, image_processor, turns: list[StreamTurn],
                 config: StreamConfig | None = None, generator: torch.Generator | None = None) -> StreamResult:
    """Feed `turns` in order, one reply (or `NO REPLY`) after each; the whole conversation back."""
    session = StreamingSession(model, renderer, image_processor, config or StreamConfig(), generator)
    for turn in turns:
        session.step(turn)
    return session.result()


def episode_stream_turns(episode: Episode, frames: list[np.ndarray],
                         context_turns: int = 0) -> list[StreamTurn]:
    """An episode's user turns with their decoded frames (in turn order, as `decode_episode_frames`
    returns them). The first `context_turns` turns are fed with their reference replies."""
    out, at = [], 0
    for turn in episode.turns:
        n = len(turn.frame_times_s)
        out.append(StreamTurn(time_s=turn.time_s, frames=list(frames[at:at + n]), text=questions_text(turn.questions),
                              forced_reply=turn.reply if turn.index < context_turns else None))
        at += n
    return out


@dataclass
class LatencyStats:
    count: int = 0
    median_s: float = 0.0
    p95_s: float = 0.0
    per_turn_s: list[float] = field(default_factory=list)


def latency_stats(latencies_s: list[float]) -> LatencyStats:
    if not latencies_s:
        return LatencyStats()
    values = np.asarray(latencies_s, dtype=float)
    return LatencyStats(len(values), float(np.median(values)), float(np.percentile(values, 95)), list(latencies_s))
