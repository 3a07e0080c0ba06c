"""GRPO's data: the RL prompts (the corpus split's stretches, streamed, or a released verl table),
what one prompt needs to be rolled out, and the processors that turn it into model inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.skips import Skip
from curation.video.frames import frame_timeline
from training.data.chat_template import TurnRenderer
from training.data.dataset import cached_frames
from training.data.frame_cache import find_cache
from training.data.frame_folders import load_frame_files
from training.data.lazy_split import LazySplit
from training.data.mmduet2 import ReleasedEpisode, read_verl_rl
from training.data.rl_prompt_index import RLPromptIndex
from training.data.rl_prompts import stretch_episode
from training.data.summary import episode_summary
from training.model import corpus_texts, load_image_processor, load_tokenizer
from training.rl.grpo_config import GRPOConfig
from training.rl.rollout import ProcessorBits
from training.tiny import SPECIAL_TOKENS


@dataclass
class RLData:
    items: object  # training prompts: a sequence of corpus stretches (streamed) or released episodes
    validation: object  # validation prompts (none for a released table)
    summary: dict
    texts: list[str]  # what the tiny preset's tokenizer is trained on


def rl_data(cfg: GRPOConfig) -> RLData:
    """The rows of the released parquet named by `data` (no validation set), else the corpus
    split's stretches as a streamed index (training.data.rl_prompt_index): each rank builds only
    the dialogues of its own prompts."""
    if cfg.data:
        episodes, counts = read_verl_rl(Path(cfg.data), Path(cfg.data_user_turns) if cfg.data_user_turns else None,
                                        Path(cfg.data_frames_root) if cfg.data_frames_root else None,
                                        cfg.episodes.seconds_per_frame)
        episodes = episodes[:cfg.max_dialogues]
        return RLData(episodes, [], {"data": cfg.data, "rows_read": counts.read, "rows_skipped": counts.skipped},
                      corpus_texts(episodes, cfg.template.system_prompt))
    cache = find_cache(cfg.corpus, cfg.frame_cache, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap,
                       cfg.max_pixels)
    split = LazySplit(cfg.corpus, cfg.split, cfg.max_dialogues)
    index = RLPromptIndex(split, cfg.prompts, cfg.episodes, frame_timeline, cache)
    sample = index.sample_dialogues(cfg.summary_sample)
    summary = {"split": cfg.split, **index.summary(), "summarised": len(sample),
               **episode_summary(sample, cfg.episodes, frame_timeline)}
    texts = corpus_texts([(d, None) for d in sample], cfg.template.system_prompt)
    split.drop_cache()
    return RLData(index.train, index.validation.head(cfg.max_validation_prompts), summary, texts)


def prepare_item(cfg: GRPOConfig, bits: ProcessorBits, item):
    """(episode, frames or None = decode from its video, context turns, the references scored,
    earlier replies or None = the context turns' own) of a corpus RL stretch or a released RL row,
    or why it cannot be rolled out."""
    if isinstance(item, ReleasedEpisode):
        frames = load_frame_files(item.frame_paths, bits.max_pixels)
        if isinstance(frames, Skip):
            return frames
        # windows that closed within the context turns were shown, not generated: not scored
        first_s = item.episode.turns[min(item.context_turns, len(item.episode.turns) - 1)].time_s
        scored = [r for r in item.references if r.reply_span[1] >= first_s]
        return item.episode, frames, item.context_turns, scored, None
    stretch, video_path, cache = item
    prompt = stretch_episode(stretch, video_path or "", cfg.episodes, frame_timeline)
    if len(prompt.episode.turns) <= prompt.context_turns:
        return Skip("episodes", "no_frames", stretch.dialogue.dialogue_id)
    frames = cached_frames(cache, prompt.episode, bits.max_pixels)  # None: the rollout decodes
    if frames is None and video_path is None:
        return Skip("episodes", "video_missing", stretch.dialogue.dialogue_id)
    return prompt.episode, frames, prompt.context_turns, list(prompt.references), stretch.context_replies


@dataclass(frozen=True)
class Processing:
    tokenizer: object
    bits: ProcessorBits
    forbidden: set[int]  # special tokens a rollout must not sample (its group is dropped and counted)


def load_processing(cfg: GRPOConfig) -> Processing:
    tokenizer = load_tokenizer(cfg.model)
    renderer = TurnRenderer(tokenizer, cfg.template.system_prompt, cfg.template.image_pad_token)
    bits = ProcessorBits(renderer, load_image_processor(cfg.model, cfg.max_pixels), cfg.max_pixels)
    forbidden = {i for i in tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) if i is not None} - {renderer.eos_id}
    return Processing(tokenizer, bits, forbidden)
