"""The streaming decision loop: feed user turns one at a time, let the model reply or stay silent.

The system prompt, then per user turn its frames (separate image items) and any question text,
rendered by `training.data.chat_template.TurnRenderer` (the same tokens SFT trains on); then at most
`max_new_tokens_per_turn` tokens are generated, ending at `<|im_end|>`. The KV cache is kept across
turns: only the new tokens of each turn are encoded. `reencode=True` re-encodes the whole history
every turn instead (the baseline of `bench.streaming_latency`).

Silence in one forward (`draft_no_reply`, on by default): most turns of a proactive episode end in
`NO REPLY`, which plain decoding pays for with one sequential forward per token. The tokens of
`NO REPLY` + `<|im_end|>` (as SFT tokenises the reply) are fed as a draft after the user turn, in the
same forward, and the logits at every draft position are read. The turn's tokens are then chosen
from those rows exactly as plain decoding would choose them, one position after the other, through
the same `_pick` (greedy argmax, or one multinomial draw from the same generator, which consumes
the same random numbers per position whatever the probabilities): a row is used only while every
token before it equals the draft's, so it is conditioned on exactly the prefix plain decoding
would have fed. At the first chosen token that differs from the draft, the cache entries of the
draft tokens past the accepted prefix are cropped away and plain decoding continues from that
token. Greedy outputs, sampled tokens for a given seed, recorded log-probs and the cache after the
turn are therefore those of plain decoding (up to float rounding of a longer chunk, ~1e-6). The
draft is skipped on must-reply turns (the forced prefix announces a reply) and cut to the token cap.

Frames first, then the decision (`ingest_frames_first`, on by default): a turn's frames come before
its text in the template (FACTS.md), and in a live stream they arrive during the turn's interval,
before it closes. So the frames (image preprocessing, the vision tower, and the turn's tokens up to
its last `<|vision_end|>`) are encoded into the cache in their own forward (`ingest_s`), and the
turn's decision forward holds only its text, its closing tokens and the draft (`latency_s`, the
decision latency). On a silent turn that decision is then one small forward where plain decoding
takes that forward plus one per remaining `NO REPLY` token. The cache is the same as one forward
over the whole turn (causal attention; float rounding of a different chunking, ~1e-6); the price is
one more model call per turn, reported by `bench.no_reply_draft` as the whole-turn ratio. A live
caller can do this per frame: `ingest(frames)` as each frame arrives, then `step(turn)` at the
turn's close with its text (and any frames not ingested); same tokens, positions and cache. That
decision forward is a chunk of several queries over a long cache, which stock `sdpa` serves by
copying the cache; the session switches the language model to `training.cached_chunk_attention`
(`cached_chunk_attention`), which gives the same results without the copy.

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

from schemas import NO_REPLY
from training.cached_chunk_attention import use_cached_chunk_attention
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
    # Verify `NO REPLY` + end-of-turn as a draft in the turn's own forward (exact; issue 23).
    draft_no_reply: bool = True
    # Encode the turn's frames in their own forward before its decision forward (see above).
    ingest_frames_first: bool = True
    # Switch the model's `sdpa` to `training.cached_chunk_attention` (same results; a multi-token
    # forward over the cache no longer copies it). It stays switched for the model's later uses.
    cached_chunk_attention: bool = True


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
    latency_s: float  # decision latency: from the turn's close (its frames in the cache) to its last token
    forced: bool = False  # a context turn fed with a known reply
    draft_accepted: int = 0  # leading tokens taken from the `NO REPLY` draft's forward
    ingest_s: float = 0.0  # the turn's frames into the cache: preprocessing, vision tower, their tokens

    @property
    def silent(self) -> bool:
        return self.text == NO_REPLY


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


def no_reply_draft_ids(renderer: TurnRenderer) -> list[int]:
    """`NO REPLY` and its `<|im_end|>`, tokenised as SFT trains them (the renderer's assistant turn)."""
    ids, _ = renderer.assistant_turn(NO_REPLY)
    return ids[:ids.index(renderer.eos_id) + 1]


class StreamingSession:
    """One conversation's state: tokens so far, M-RoPE positions, images, and the KV cache."""

    def __init__(self, model, renderer: TurnRenderer, image_processor, config: StreamConfig,
                 generator: torch.Generator | None = None):
        self.model, self.renderer, self.image_processor, self.config = model, renderer, image_processor, config
        self.generator = generator
        if config.cached_chunk_attention:
            use_cached_chunk_attention(model)
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
        # The open turn: token counts of its frames already ingested, its tokens in the sequence, the
        # seconds that took.
        self._open_counts: list[int] = []
        self._open_len = 0
        self._open_ingest_s = 0.0
        self.trailing_suffix = 0  # tokens after the last reply's `<|im_end|>` (dropped by result())
        # Tokens a reply must never contain: an image pad with no image behind it breaks the
        # stream's M-RoPE positions; the others open turns or vision spans (HF's suppress_tokens).
        self.banned = torch.tensor(banned_token_ids(renderer.tokenizer), dtype=torch.long)
        self.no_reply_draft = no_reply_draft_ids(renderer)
        self.vision_end_id = renderer.tokenizer.convert_tokens_to_ids("<|vision_end|>")
        # Per-turn constants, tokenised once: a silent turn's decision is a few ms, and a tokenizer
        # call is tens of µs that would count in every turn's latency.
        self.suffix_ids = renderer.assistant_suffix_ids()
        self.no_reply_text = renderer.reply_text(self.no_reply_draft)
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

    def _forward(self, start: int, pixel_values, grid_thw, draft: list[int] = ()) -> torch.Tensor:
        """Encode tokens [start:] on top of the cache holding [:start], then `draft` (text tokens not
        in the sequence yet, at the positions that would follow it). Logits (1 + len(draft), vocab):
        after the sequence's last token, then after each draft token."""
        ids = torch.tensor([self.ids[start:] + list(draft)], device=self.device)
        pos = self._positions_from(start)
        if draft:  # text tokens: one position up on all three M-RoPE axes
            pos = torch.cat([pos, (self.next_pos + torch.arange(len(draft))).expand(3, -1)], dim=1)
        out = self.model(input_ids=ids, position_ids=pos.unsqueeze(1).to(self.device), pixel_values=pixel_values,
                         image_grid_thw=grid_thw, use_cache=True, logits_to_keep=1 + len(draft),
                         **{self._cache_kw: self.cache})
        self.cache = getattr(out, "cache", None) or out.past_key_values
        self.fed = len(self.ids) + len(draft)
        return out.logits[0].float()

    def _crop_cache(self) -> None:
        """Drop cached draft tokens the turn did not keep: plain decoding's cache holds every token
        but the last one chosen."""
        extra = self.fed - (len(self.ids) - 1)
        if extra > 0:  # crop(-n) removes n tokens (transformers 4.57 and 5.x alike); crop(0) would wipe it
            self.cache.crop(-extra)
            self.fed -= extra

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

    def _take(self, logits: torch.Tensor, generated: list[int]) -> int:
        token = self._pick(logits)
        self._append([token], [], sampled=True, logprobs=[float(torch.log_softmax(logits, -1)[token])])
        generated.append(token)
        return token

    # -------------------------------------------------------------- one turn
    @torch.no_grad()
    def ingest(self, frames: list[np.ndarray]) -> float:
        """Encode frames of the open user turn into the cache now, as they arrive, before the turn
        closes; the seconds it took. The turn's tokens up to these frames' last `<|vision_end|>`
        enter the cache; `step` later feeds the turn's remaining frames (those not given here), its
        text and its closing tokens. Called by `step` itself when `ingest_frames_first` is on."""
        if self.config.reencode:
            raise ValueError("ingest() needs the KV cache; with reencode=True give a turn's frames to step()")
        started = time.perf_counter()
        pixel_values, grid_thw, counts, grids = self._images(frames)
        if not counts:
            return 0.0
        self._open_counts += counts
        user_ids = self.renderer.user_turn_ids(self._open_counts)
        new = self._open_turn_rest(user_ids[:self._frames_end(user_ids)])
        self._append(new, grids, sampled=False)
        self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
        self._open_len += len(new)
        spent = time.perf_counter() - started
        self._open_ingest_s += spent
        return spent

    @torch.no_grad()
    def step(self, turn: StreamTurn) -> TurnReply | None:
        """Close one user turn and feed it (its frames, after any given to `ingest` for it); its
        reply, or None for a `skip_inference` turn."""
        frames = turn.frames
        if frames and self.config.ingest_frames_first and not self.config.reencode and turn.forced_reply is None \
                and not turn.skip_inference:
            self.ingest(frames)
            frames = []
        started = time.perf_counter()
        pixel_values, grid_thw, counts, grids = self._images(frames)
        prefix = self.renderer.encode(self.config.must_reply_prefix) if turn.must_reply else []
        if self.config.reencode:  # drop the cache: the whole history is encoded again
            self.cache, self.fed = None, 0
            pixel_values = torch.cat(self.pixels) if self.pixels else None
            grid_thw = torch.cat(self.grids) if self.grids else None
        user_ids = self._open_turn_rest(self.renderer.user_turn_ids(self._open_counts + counts, turn.text,
                                                                    generate=not turn.skip_inference))
        ingest_s = self._open_ingest_s
        self._open_counts, self._open_len, self._open_ingest_s = [], 0, 0.0
        self._append(user_ids, grids, sampled=False)
        if turn.skip_inference:
            self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
            self.trailing_suffix = 0
            return None
        if turn.forced_reply is not None:
            ids, _ = self.renderer.assistant_turn(turn.forced_reply)
            self._append(ids, [], sampled=False)
            self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw))
            reply = TurnReply(turn.time_s, turn.forced_reply, [], False, time.perf_counter() - started, True,
                              ingest_s=ingest_s)
            self.turns.append(reply)
            self.trailing_suffix = len(self.suffix_ids)  # the fed reply ends with it
            return reply
        self._append(prefix, [], sampled=False)
        eos, cap = self.renderer.eos_id, self.config.max_new_tokens_per_turn
        draft = self.no_reply_draft[:cap] if self.config.draft_no_reply and not prefix else []
        # Row i of `rows` is conditioned on draft[:i]; it is used only while the chosen tokens
        # equal the draft, so every token is chosen from the row plain decoding would compute.
        rows = self._forward(self.fed, self._to_device(pixel_values), self._to_device(grid_thw), draft[:-1])
        generated: list[int] = []
        accepted = 0
        for logits in rows:
            token = self._take(logits, generated)
            if accepted == len(draft) or token != draft[accepted]:
                break
            accepted += 1
        self._crop_cache()
        while generated[-1] != eos and len(generated) < cap:
            self._take(self._forward(self.fed, None, None)[-1], generated)
        cut = generated[-1] != eos
        if cut:
            self._append([eos], [], sampled=False)  # closes the turn; not a policy action
        # The closing newline enters the cache with the next turn's tokens.
        self._append(self.suffix_ids, [], sampled=False)
        self.trailing_suffix = len(self.suffix_ids)
        text = self.no_reply_text if generated == self.no_reply_draft else self.renderer.reply_text(generated)
        reply = TurnReply(turn.time_s, text, generated, cut, time.perf_counter() - started,
                          draft_accepted=accepted, ingest_s=ingest_s)
        self.turns.append(reply)
        return reply

    def _images(self, frames: list[np.ndarray]):
        """Pixel inputs, grids and token counts of a turn's frames, kept for `result()`."""
        if not frames:
            return None, None, [], []
        pixel_values, grid_thw = image_inputs(frames, self.image_processor)
        self.pixels.append(pixel_values)
        self.grids.append(grid_thw)
        return (pixel_values, grid_thw, tokens_per_image(grid_thw, self.merge_size),
                [tuple(int(x) for x in g) for g in grid_thw])

    def _open_turn_rest(self, turn_ids: list[int]) -> list[int]:
        """The tokens of the open turn's rendering `turn_ids` not yet in the sequence: those after the
        ones `ingest` appended, which must be its first tokens."""
        if self._open_len and turn_ids[:self._open_len] != self.ids[len(self.ids) - self._open_len:]:
            raise ValueError("the chat template renders a turn's later frames or text in front of the frames "
                             "already ingested; give the turn's frames to step() instead of ingest()")
        return turn_ids[self._open_len:]

    def _frames_end(self, user_ids: list[int]) -> int:
        """Where a user turn's frames end: after its last image pad and the `<|vision_end|>` closing it."""
        end = len(user_ids) - user_ids[::-1].index(self.renderer.image_pad_id)
        return end + (end < len(user_ids) and user_ids[end] == self.vision_end_id)

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


def latency_split(replies: list[TurnReply]) -> dict[str, int | float]:
    """Count, median and p95 of per-turn decision latency over all turns, silent (`NO REPLY`) turns
    and spoken ones (with the `NO REPLY` draft the two cost differently, and one median hides both),
    and of the frames' ingest time that precedes each decision."""
    out: dict[str, int | float] = {}
    groups = (("", replies), ("silent_", [r for r in replies if r.silent]),
              ("spoken_", [r for r in replies if not r.silent]))
    for name, chosen in groups:
        stats = latency_stats([r.latency_s for r in chosen])
        out |= {f"{name}turns": stats.count, f"{name}latency_median_s": stats.median_s,
                f"{name}latency_p95_s": stats.p95_s}
    ingest = latency_stats([r.ingest_s for r in replies if r.ingest_s])  # frames into the cache, before the decision
    return out | {"ingest_median_s": ingest.median_s, "ingest_p95_s": ingest.p95_s}
