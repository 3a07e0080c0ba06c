"""The Qwen2.5-VL chat template for streaming episodes, rendered turn by turn with loss labels.

Each message is rendered with the tokenizer's OWN chat template (so a real checkpoint and the tiny
preset share one code path): a turn's text is the difference between the template applied to the
conversation with and without it. Frames are separate image items in the user turn, any text
(questions) after them (FACTS.md). Each `<|image_pad|>` is expanded to grid_t*grid_h*grid_w /
merge_size^2 tokens, as Qwen's processor does, using `Qwen2VLImageProcessorPil` (the torchvision-
free image processor).

Labels sit only on assistant tokens: the reply text and its end-of-turn token, never the
generation prompt, the newline after `<|im_end|>`, frames or questions. The mask is built per turn
and asserted against one tokenisation of the whole episode (FACTS.md "Trainer masks", as verl
does), so a template whose turns do not concatenate cleanly fails loudly instead of mislabelling.

Streaming use (rollouts, evaluation): `TurnRenderer.system_ids()` once, then per step
`user_turn_ids(image_token_counts, text)` (ends with the assistant generation prompt), generate
until `<|im_end|>`, then append `assistant_suffix_ids()` before the next user turn; or
`assistant_turn(reply)` to feed a known reply with its labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.skips import Skip
from schemas import NO_REPLY
from training.data.episodes import STAGE, Episode

if TYPE_CHECKING:  # torch is imported where tensors are made: a command checks its config first
    import torch

IGNORE_INDEX = -100

# FACTS.md system prompt gist, written out as a prompt (the published wording is not released).
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant watching a video as it streams. New frames arrive continuously, "
    "a few at a time, and the user may ask questions at any moment. After each new set of frames, "
    "answer the user's questions with what the video has shown since your last reply. If the video "
    f"so far cannot answer, or there is nothing new to say, reply exactly: {NO_REPLY}"
)


class TemplateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # FACTS.md system prompt gist (default)
    max_length_tokens: int = Field(10240, ge=16)  # FACTS.md: SFT max length about 10k tokens
    no_reply_loss_weight: float = Field(1.0, ge=0)  # Streamo lesson (FACTS.md); 1.0 = unweighted
    image_pad_token: str = "<|image_pad|>"


class ChatTemplateError(ValueError):
    pass


def check_chat_template(tokenizer, name: str = "the tokenizer") -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"{name} has no chat template: load an instruct/chat checkpoint (e.g. "
            "Qwen/Qwen2.5-VL-3B-Instruct) or set tokenizer.chat_template before training")


def user_message(n_images: int, text: str) -> dict:
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    if text:
        content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_message(reply: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": reply}]}


def system_message(prompt: str) -> dict:
    return {"role": "system", "content": [{"type": "text", "text": prompt}]}


def questions_text(questions) -> str:
    return "\n".join(questions)


MEMO_TEXTS = 4096


class TurnRenderer:
    """Token ids of one piece of a conversation at a time (system, a user turn, a reply)."""

    def __init__(self, tokenizer, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 image_pad_token: str = "<|image_pad|>"):
        check_chat_template(tokenizer)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.image_pad_id = tokenizer.convert_tokens_to_ids(image_pad_token)
        self.eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if self.image_pad_id is None or self.eos_id is None:
            raise ChatTemplateError("tokenizer lacks <|image_pad|> or <|im_end|>: not a Qwen2.5-VL tokenizer")
        self._system = [system_message(system_prompt)]
        self._probe_user = user_message(1, "?")
        # Rendered turn texts by their inputs: most streamed turns are identical ("two frames, no
        # question", "NO REPLY"), and the Jinja render was a fifth of an episode's load time.
        self._texts: dict[tuple, str | list[int]] = {}
        after_reply = self.assistant_turn_text("x")
        self._suffix_text = after_reply[after_reply.index("x") + 1:].split("<|im_end|>", 1)[1]

    def render(self, messages: list[dict], gen: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def _delta(self, messages: list[dict], gen: bool) -> str:
        return self.render(messages, gen)[len(self._memo(("system",), lambda: self.render(self._system))):]

    def _memo(self, key: tuple, make):
        if key not in self._texts:
            if len(self._texts) >= MEMO_TEXTS:  # bounded: long runs see many distinct questions
                self._texts.clear()
            self._texts[key] = make()
        return self._texts[key]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def expand_images(self, ids: list[int], image_token_counts: list[int]) -> list[int]:
        out: list[int] = []
        counts = iter(image_token_counts)
        for token in ids:
            out.extend([token] * next(counts) if token == self.image_pad_id else [token])
        if next(counts, None) is not None:
            raise ChatTemplateError("more images than image pads in the rendered turn")
        return out

    def system_ids(self) -> list[int]:
        return self.encode(self.render(self._system))

    def user_turn_text(self, n_images: int, text: str, generate: bool = True) -> str:
        return self._memo(("user", n_images, text, generate),
                          lambda: self._delta(self._system + [user_message(n_images, text)], gen=generate))

    def user_turn_ids(self, image_token_counts: list[int], text: str = "", generate: bool = True) -> list[int]:
        """A user turn with its frames and text, ending with the assistant generation prompt
        (`generate=False`: without it, for a turn that is fed and not answered)."""
        key = (len(image_token_counts), text, generate)  # memoised ids: a streamed turn renders it twice
        ids = self._memo(("user_ids", *key), lambda: self.encode(self.user_turn_text(*key)))
        return self.expand_images(ids, image_token_counts)

    def assistant_turn_text(self, reply: str) -> str:
        msgs = self._system + [self._probe_user]
        return self._memo(("assistant", reply), lambda: self.render(msgs + [assistant_message(reply)])[
            len(self.render(msgs, gen=True)):])

    def assistant_turn(self, reply: str) -> tuple[list[int], list[int]]:
        """(ids, labels) of one reply: labels on the reply and its `<|im_end|>`, not after it."""
        ids = self.encode(self.assistant_turn_text(reply))
        if self.eos_id not in ids:
            raise ChatTemplateError("assistant turn has no <|im_end|>")
        end = len(ids) - ids[::-1].index(self.eos_id)
        return ids, ids[:end] + [IGNORE_INDEX] * (len(ids) - end)

    def labelled_tokens(self, reply: str) -> int:
        """How many tokens of this reply carry loss (the data summary's loss-weight shares)."""
        return self._memo(("labelled", reply), lambda: sum(x != IGNORE_INDEX for x in self.assistant_turn(reply)[1]))

    def reply_text(self, ids: list[int]) -> str:
        """A generated reply's text: its ids without `<|im_end|>`, special tokens dropped, stripped."""
        return self.tokenizer.decode([t for t in ids if t != self.eos_id], skip_special_tokens=True).strip()

    def assistant_suffix_ids(self) -> list[int]:
        """What follows a generated `<|im_end|>` before the next user turn (a newline for Qwen)."""
        return self.encode(self._suffix_text)


@dataclass
class EncodedEpisode:
    input_ids: list[int]
    labels: list[int]
    loss_weights: list[float]
    pixel_values: torch.Tensor  # (patches, channels*temporal*patch*patch), images in turn order
    image_grid_thw: torch.Tensor  # (images, 3)
    first_turn: int  # index of the first turn kept after left truncation
    reply_turns: list[int]  # indices of kept turns whose target is not NO REPLY


def image_inputs(frames: list[np.ndarray], image_processor) -> tuple[torch.Tensor, torch.Tensor]:
    from training.data.pixels import fast_image_inputs

    for i, frame in enumerate(frames):  # a live caller's frame, not only the decoder's: say which one is wrong
        if getattr(frame, "ndim", None) != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frame {i}: expected an (H, W, 3) RGB array, got {type(frame).__name__} "
                             f"of shape {getattr(frame, 'shape', None)}")
    fast = fast_image_inputs(frames, image_processor)  # the processor's output, without its per-frame loop
    if fast is not None:
        return fast
    out = image_processor(images=frames, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def tokens_per_image(image_grid_thw: torch.Tensor, merge_size: int) -> list[int]:
    return [int(n) // merge_size**2 for n in image_grid_thw.prod(dim=1)]


def encode_episode(episode: Episode, frames: list[np.ndarray], renderer: TurnRenderer,
                   image_processor, config: TemplateConfig) -> EncodedEpisode | Skip:
    """Token ids, labels and image inputs of a whole episode, truncated from the left at whole
    turns (the system prompt kept) to `max_length_tokens`. Questions of dropped turns move to the
    first kept turn, so no kept answer loses its question."""
    pixel_values, grid_thw = image_inputs(frames, image_processor)
    per_image = tokens_per_image(grid_thw, image_processor.merge_size)
    patches = [int(n) for n in grid_thw.prod(dim=1)]
    image_at = np.cumsum([0] + [len(t.frame_times_s) for t in episode.turns])
    system = renderer.system_ids()
    replies = [renderer.assistant_turn(t.reply) for t in episode.turns]

    def asked(i: int, carry: bool) -> str:
        # The first kept turn also carries the questions of the turns dropped before it.
        turns = episode.turns[:i + 1] if carry else episode.turns[i:i + 1]
        return questions_text([q for t in turns for q in t.questions])

    def user_ids(i: int, carry: bool) -> list[int]:
        return renderer.user_turn_ids(per_image[image_at[i]:image_at[i + 1]], asked(i, carry))

    lengths = [len(user_ids(i, False)) + len(replies[i][0]) for i in range(len(episode.turns))]

    def fits(first: int) -> bool:
        if len(system) + sum(lengths[first:]) > config.max_length_tokens:
            return False  # a lower bound: carried questions only add tokens
        total = len(system) + len(user_ids(first, True)) + len(replies[first][0]) + sum(lengths[first + 1:])
        return total <= config.max_length_tokens

    first = next((f for f in range(len(lengths)) if fits(f)), None)
    if first is None:
        return Skip(STAGE, "turn_too_long", f"{episode.dialogue_id}: the last turn alone exceeds "
                    f"{config.max_length_tokens} tokens")
    input_ids, labels, weights, reply_turns = list(system), [IGNORE_INDEX] * len(system), [0.0] * len(system), []
    messages = [system_message(renderer.system_prompt)]
    for i in range(first, len(episode.turns)):
        turn = episode.turns[i]
        u = user_ids(i, i == first)
        ids, lab = replies[i]
        weight = config.no_reply_loss_weight if turn.is_silent else 1.0
        input_ids += u + ids
        labels += [IGNORE_INDEX] * len(u) + lab
        weights += [0.0] * len(u) + [weight if x != IGNORE_INDEX else 0.0 for x in lab]
        messages += [user_message(len(turn.frame_times_s), asked(i, i == first)),
                     assistant_message(turn.reply)]
        if not turn.is_silent:
            reply_turns.append(i)
    check_against_full_render(input_ids, messages, renderer,
                              per_image[image_at[first]:], episode.dialogue_id)
    keep = slice(sum(patches[:image_at[first]]), None)
    return EncodedEpisode(input_ids=input_ids, labels=labels, loss_weights=weights,
                          pixel_values=pixel_values[keep], image_grid_thw=grid_thw[image_at[first]:],
                          first_turn=first, reply_turns=reply_turns)


def check_against_full_render(input_ids: list[int], messages: list[dict], renderer: TurnRenderer,
                              image_token_counts: list[int], what: str) -> None:
    full = renderer.expand_images(renderer.encode(renderer.render(messages)), image_token_counts)
    if full != input_ids:
        at = next((i for i, (a, b) in enumerate(zip(full, input_ids, strict=False)) if a != b),
                  min(len(full), len(input_ids)))
        raise ChatTemplateError(
            f"{what}: per-turn tokens differ from the whole episode's tokenisation at position {at} "
            f"({len(input_ids)} vs {len(full)} tokens); the chat template does not split into turns")


def collate_episodes(episodes: list[EncodedEpisode], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; images of all episodes concatenated in batch order (Qwen's layout)."""
    import torch

    width = max(len(e.input_ids) for e in episodes)

    def pad(rows, value, dtype):
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=dtype)

    def join(tensors: list[torch.Tensor]) -> torch.Tensor:
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # one episode: no 70 MB copy

    return {
        "input_ids": pad([e.input_ids for e in episodes], pad_id, torch.long),
        "attention_mask": pad([[1] * len(e.input_ids) for e in episodes], 0, torch.long),
        "labels": pad([e.labels for e in episodes], IGNORE_INDEX, torch.long),
        "loss_weights": pad([e.loss_weights for e in episodes], 0.0, torch.float32),
        "pixel_values": join([e.pixel_values for e in episodes]),
        "image_grid_thw": join([e.image_grid_thw for e in episodes]),
    }
