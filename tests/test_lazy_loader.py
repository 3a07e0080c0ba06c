"""Issue 17: the lazy split reader, the per-rank shares, the locality-aware order and the frame cache,
on corpora of the sample videos (tests.sample_corpus) and a generated one of 3,000 dialogues."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from schemas import Dialogue, to_table, write_parquet
from tests.conftest import ROOT, dialogue_row
from tests.sample_corpus import build_corpus
from training.data.corpus import read_split
from training.data.dataset import EpisodeDataset, batch_order, loader_workers, rank_batches
from training.data.episodes import EpisodeConfig
from training.data.frame_cache import FrameCache, cache_key
from training.data.lazy_split import LazySplit, SplitItems
from training.data.prepare_frames import prepare_cache

PIXELS = 56 * 56


def rows(prefix: str, count: int, video_id: str = "bikes") -> list[dict]:
    return [dialogue_row(dialogue_id=f"{prefix}-{i}", video_id=video_id) for i in range(count)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three row groups of train dialogues (one per row), one of them about a video with no row."""
    four = dialogue_row(dialogue_id="g4-0", video_id="generated_four_scenes")
    four["duration_s"] = 36.0
    root = build_corpus(tmp_path_factory.mktemp("corpus"),
                        {"train": [*rows("bikes-mq", 2), four, dialogue_row(dialogue_id="gone-0", video_id="gone")],
                         "validation": rows("bikes-v", 1)},
                        ["bikes", "generated_four_scenes"])
    shard = root / "data" / "dialogues" / "train-00000.parquet"
    table = pq.read_table(shard)
    pq.write_table(table, shard, row_group_size=2)  # two row groups: the reader must cross them
    return root


def test_lazy_reader_equals_read_split(corpus):
    eager = read_split(corpus, "train")
    lazy = LazySplit(corpus, "train")
    assert len(lazy) == len(eager.dialogues) == 4 and lazy.block_sizes() == [2, 2]
    for i in (3, 0, 2, 1):  # out of order: row groups are read on demand
        dialogue, video_path, cache = lazy[i]
        assert dialogue == eager.dialogues[i]
        assert video_path == eager.video_path(dialogue.video_id) and cache is None
    assert lazy[3].video_path is None  # "gone" has no video row
    short = LazySplit(corpus, "train", max_dialogues=3)
    assert [short.dialogue(i) for i in range(len(short))] == read_split(corpus, "train", 3).dialogues
    assert short.block_sizes() == [2, 1]
    with pytest.raises(IndexError):
        short.dialogue(3)
    assert LazySplit(corpus, "train").column("video_id").to_pylist() == [d.video_id for d in eager.dialogues]


def test_rank_shares_are_disjoint_and_cover_the_rounds():
    blocks = [7, 5, 9, 3, 6, 10]  # 40 items in row groups, then 13 unblocked (released, offline)
    for world in (1, 2, 3, 4):
        batches = batch_order(53, 2, seed=3, epoch=1, blocks=blocks, window_blocks=2)
        assert sorted(i for b in batches for i in b) == list(range(53))  # a permutation
        shares = [rank_batches(batches, world, rank) for rank in range(world)]
        seen = [i for share in shares for b in share for i in b]
        assert len(seen) == len(set(seen))  # disjoint
        rounds = len(batches) // world * world
        assert set(seen) == {i for b in batches[:rounds] for i in b}  # covering every whole round
        assert len({len(s) for s in shares}) == 1
    again = batch_order(53, 2, seed=3, epoch=1, blocks=blocks, window_blocks=2)
    assert again == batch_order(53, 2, seed=3, epoch=1, blocks=blocks, window_blocks=2)  # resume: pure
    assert again != batch_order(53, 2, seed=3, epoch=2, blocks=blocks, window_blocks=2)


def test_order_keeps_a_window_of_row_groups_together():
    blocks = [100] * 8
    order = [i for b in batch_order(800, 10, seed=0, epoch=0, blocks=blocks, window_blocks=2) for i in b]
    for w in range(4):  # each stretch of 200 items comes from exactly two row groups
        assert len({i // 100 for i in order[w * 200:(w + 1) * 200]}) == 2
    assert order[:200] != sorted(order[:200])  # shuffled within the window


def test_split_items_put_the_corpus_first(corpus):
    items = SplitItems([LazySplit(corpus, "train"), LazySplit(corpus, "validation")], extra=["released"])
    assert len(items) == 6 and items.block_sizes() == [2, 2, 1]
    assert items[4].dialogue.dialogue_id == "bikes-v-0" and items[5] == "released"
    first = items[0].dialogue.dialogue_id
    items.drop_cache()  # every split forgets its row groups; reading again re-reads them
    assert all(not split._cache for split in items.splits) and items[0].dialogue.dialogue_id == first


def test_loader_workers_default():
    assert loader_workers(3) == 3 and loader_workers(0) == 0
    assert 0 <= loader_workers(None) <= 4
    assert loader_workers(None, processes_per_node=10_000) == 0


def generated_corpus(root: Path, dialogues: int, per_shard: int = 500) -> Path:
    """Many dialogue rows (no video decoded), written by the project's own Parquet writer."""
    base = Dialogue.model_validate(dialogue_row())
    shards = []
    for s in range(0, dialogues, per_shard):
        records = [base.model_copy(update={"dialogue_id": f"v{i}-d0", "video_id": f"v{i}"})
                   for i in range(s, min(dialogues, s + per_shard))]
        rel = f"data/dialogues/train-{s // per_shard:05d}-00.parquet"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_parquet(to_table(records, Dialogue), root / rel)
        shards.append({"table": "dialogues", "split": "train", "path": rel})
    (root / "index.json").write_text(json.dumps({"schema_version": "1.0", "shards": shards}))
    return root


def test_index_holds_no_dialogue_objects_and_does_not_grow_per_dialogue(tmp_path):
    small = LazySplit(generated_corpus(tmp_path / "small", 500, per_shard=500), "train")
    gc.collect()
    before = sum(type(o) is Dialogue for o in gc.get_objects())
    large = LazySplit(generated_corpus(tmp_path / "large", 3000, per_shard=3000), "train")
    gc.collect()
    assert sum(type(o) is Dialogue for o in gc.get_objects()) == before  # none built by the index
    assert len(large) == 3000 and len(small) == 500

    def index_bytes(split):
        return split.group_start.nbytes + split.group_file.nbytes + split.group_index.nbytes

    assert index_bytes(large) == index_bytes(small)  # one entry per row group, not per dialogue
    assert large.dialogue(2999).dialogue_id == "v2999-d0"


def test_frame_cache_key_rebuild_and_resume(corpus, tmp_path):
    root = shutil.copytree(corpus, tmp_path / "c")
    cache = FrameCache(root, 2.0, 8, PIXELS)
    counts = prepare_cache(root, ["train", "validation"], cache, workers=1, progress=False)
    assert counts.written == 2 and counts.skipped == {"video_missing": 1}  # "gone" counted, not a crash
    assert cache.folder.name == cache_key(2.0, 8, PIXELS)
    assert cache.frame_count("generated_four_scenes") == 8  # 36 s at 2 s, capped at 8
    again = prepare_cache(root, ["train", "validation"], cache, workers=1, progress=False)
    assert again.written == 0 and again.present == 2  # resumable: nothing decoded twice
    other = FrameCache(root, 1.0, 8, 2 * PIXELS)  # another interval and pixel budget: another key
    assert other.folder != cache.folder and not other.exists()
    assert prepare_cache(root, ["train"], other, workers=1, progress=False).written == 2
    assert not list(cache.folder.rglob(".tmp-*"))
    # an undecodable video: a counted skip, and no file for it
    bad = FrameCache(root, 2.0, 9, PIXELS)
    (root / "videos" / "bikes.mp4").write_bytes(b"\x00" * 4096)
    assert prepare_cache(root, ["validation"], bad, progress=False).skipped == {"video_undecodable": 1}
    assert bad.frame_count("bikes") is None


def test_a_damaged_or_foreign_cache_file_is_a_miss_and_prepare_writes_it_again(corpus, tmp_path):
    root = shutil.copytree(corpus, tmp_path / "c")
    cache = FrameCache(root, 2.0, 8, PIXELS)
    prepare_cache(root, ["train"], cache, workers=1, progress=False)
    path = cache.path_of("generated_four_scenes")
    for damage in (lambda: path.write_bytes(b"not an npy"), lambda: np.save(path, np.zeros((8, 4))),
                   lambda: path.write_bytes(path.read_bytes()[:200])):
        prepare_cache(root, ["train"], cache, workers=1, progress=False)
        damage()
        assert cache.load("generated_four_scenes", [0.0, 2.0]) is None  # the trainer decodes instead
        assert cache.frame_count("generated_four_scenes") is None
        assert prepare_cache(root, ["train"], cache, workers=1, progress=False).written == 1
        assert [f.shape for f in cache.load("generated_four_scenes", [0.0])][0][2] == 3


def test_training_from_the_cache_encodes_what_decoding_encodes(corpus, tmp_path):
    from training.data.chat_template import TemplateConfig, TurnRenderer
    from training.model import load_image_processor
    from training.tiny import build_tiny_tokenizer

    root = shutil.copytree(corpus, tmp_path / "c")
    episodes = EpisodeConfig(max_frames=8)
    cache = FrameCache(root, episodes.seconds_per_frame, episodes.frame_cap, PIXELS)
    prepare_cache(root, ["train"], cache, progress=False)
    split = LazySplit(root, "train")
    tokenizer = build_tiny_tokenizer([t for i in range(len(split)) for t in
                                      (split.dialogue(i).user_turns[0].text, split.dialogue(i).references[0].answer)])
    renderer = TurnRenderer(tokenizer)
    image_processor = load_image_processor("/nonexistent-so-defaults", PIXELS)

    def encoded(with_cache: bool):
        split = LazySplit(root, "train")
        split.frame_cache = cache if with_cache else None
        dataset = EpisodeDataset(split, episodes, renderer, image_processor, TemplateConfig(), PIXELS)
        return [dataset[i] for i in range(3)]  # the fourth has no video and no cache entry

    decoded, cached = encoded(False), encoded(True)
    for a, b in zip(decoded, cached, strict=True):
        assert a.input_ids == b.input_ids and a.labels == b.labels
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.image_grid_thw, b.image_grid_thw)
    for video in (root / "videos").iterdir():  # the cache alone feeds training: no video is read
        video.unlink()
    assert all(torch.equal(a.pixel_values, b.pixel_values) for a, b in zip(decoded, encoded(True), strict=True))


def test_prepare_cli_writes_the_cache(corpus, tmp_path):
    root = shutil.copytree(corpus, tmp_path / "c")
    proc = subprocess.run([sys.executable, "-m", "training.run", "prepare", f"corpus={root}", "max_pixels=3136",
                           "episodes.max_frames=4", "--workers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["written"] == 2 and report["skipped"] == {"video_missing": 1}
    assert np.load(FrameCache(root, 2.0, 4, 3136).path_of("bikes")).shape[0] == 4


def test_grpo_prompts_take_their_frames_from_the_cache(corpus, tmp_path):
    from types import SimpleNamespace

    from curation.video.frames import decode_frames
    from training.data.episodes import decode_episode_frames
    from training.rl.grpo import GRPOConfig
    from training.rl.grpo_data import prepare_item, rl_data

    root = shutil.copytree(corpus, tmp_path / "c")
    cfg = GRPOConfig(corpus=str(root), split="train", max_pixels=PIXELS, episodes={"max_frames": 8},
                     prompts={"validation_share": 0.0})
    bits = SimpleNamespace(max_pixels=PIXELS)
    items = rl_data(cfg).items
    assert items and all(it[2] is None for it in items)  # no cache prepared: the rollout decodes
    assert all(prepare_item(cfg, bits, it)[1] is None for it in items if it[1] is not None)
    prepare_cache(root, ["train"], FrameCache(root, 2.0, 8, PIXELS), progress=False)
    items = rl_data(cfg).items
    for item in items:
        if item[1] is None:
            continue
        episode, frames = prepare_item(cfg, bits, item)[:2]
        decoded = decode_episode_frames(episode, PIXELS, decode_frames)
        assert len(frames) == len(decoded) and all(np.array_equal(a, b) for a, b in zip(frames, decoded, strict=True))


def test_sft_trains_from_the_cache_without_the_videos(corpus, tmp_path):
    from training.sft import SFTConfig, train

    root = shutil.copytree(corpus, tmp_path / "c")
    cfg = SFTConfig.model_validate({"corpus": str(root), "output_dir": str(tmp_path / "run"), "preset": "tiny",
                                    "max_pixels": PIXELS, "episodes": {"max_frames": 8}, "max_steps": 4,
                                    "eval_split": None, "num_workers": 0})
    prepare_cache(root, ["train"], FrameCache(root, 2.0, 8, PIXELS), progress=False)
    shutil.rmtree(root / "videos")  # nothing left to decode: every frame comes from the cache
    summary = train(cfg)
    assert summary["data"]["frame_cache"] and summary["data"]["items"] == 4
    assert summary["skipped"] == {"video_missing": 1}  # "gone": no video row, no cache entry
    assert len(summary["losses"]) == 3


def test_a_shard_damaged_after_opening_is_a_counted_skip(corpus, tmp_path):
    from training.data.chat_template import TemplateConfig

    root = shutil.copytree(corpus, tmp_path / "c")
    split = LazySplit(root, "train")
    shard = root / "data" / "dialogues" / "train-00000.parquet"
    shard.write_bytes(b"\0" * shard.stat().st_size)  # same size, footer already read
    dataset = EpisodeDataset(split, EpisodeConfig(max_frames=4), None, None, TemplateConfig(), PIXELS)
    skip = dataset[0]
    assert skip.reason == "unreadable_shard" and "train-00000.parquet" in skip.detail


def test_fast_pixel_inputs_are_the_processors_bit_for_bit(samples_dir):
    from curation.video.frames import decode_frames
    from training.data.pixels import fast_image_inputs
    from training.model import load_image_processor

    rng = np.random.default_rng(0)
    for budget in (PIXELS, 128 * 28 * 28):
        processor = load_image_processor("/nonexistent-so-defaults", budget)
        decoded = decode_frames(samples_dir / "videos" / "bikes.mp4", [0.0, 1.0, 2.0], budget)
        noise = [rng.integers(0, 256, decoded[0].shape, dtype=np.uint8) for _ in range(2)]
        for frames in (decoded, noise):
            fast = fast_image_inputs(frames, processor)
            slow = processor(images=frames, return_tensors="pt")
            assert fast is not None
            assert torch.equal(fast[0], slow["pixel_values"]) and torch.equal(fast[1], slow["image_grid_thw"])
    odd = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)]  # not at a target size: the processor's job
    assert fast_image_inputs(odd, processor) is None
