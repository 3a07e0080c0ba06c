"""SFT end to end on the tiny preset: the CLI, loss falling, parameters moving, exact resume,
and the corpus reader's errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas import SchemaVersionError
from tests.conftest import ROOT, dialogue_row
from tests.sample_corpus import build_corpus
from training.data.corpus import CorpusError, read_split
from training.sft import SFTConfig, load_config, train

FAST = {"max_pixels": 56 * 56, "episodes": {"max_frames": 8}, "eval_every_steps": 1000}


def four_scenes_row() -> dict:
    answers = ["A colour test pattern with a running timecode.", "Colour bars fill the screen.",
               "A colourful fractal zooms in.", "Red, green and blue gradients."]
    qid = "g4-sq-0-q0"
    return {
        "dialogue_id": "g4-sq-0", "video_id": "generated_four_scenes", "kind": "single_question",
        "duration_s": 36.0,
        "user_turns": [{"question_id": qid, "time_s": 0.0, "text": "What is on screen?"}],
        "references": [{"question_id": qid, "question": "What is on screen?", "answer": a,
                        "reply_span": [9.0 * i, 9.0 * (i + 1)]} for i, a in enumerate(answers)],
        "provenance": dialogue_row()["provenance"],
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    train_rows = [dialogue_row(), four_scenes_row(), dialogue_row(dialogue_id="bikes-mq-1")]
    return build_corpus(tmp_path_factory.mktemp("corpus"),
                        {"train": train_rows, "validation": [dialogue_row(dialogue_id="bikes-mq-9")]},
                        ["bikes", "generated_four_scenes"])


def config(corpus: Path, out: Path, **overrides) -> SFTConfig:
    return SFTConfig.model_validate({"corpus": str(corpus), "output_dir": str(out), "preset": "tiny",
                                     **FAST, **overrides})


def weights_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_cli_trains_the_tiny_preset_on_cpu(corpus, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(json.dumps({"corpus": str(corpus), "output_dir": str(out), "max_steps": 5,
                                       "episodes": {"max_frames": 6}}))
    proc = subprocess.run(
        [sys.executable, "-m", "training.run", "sft", "--config", str(config_file), "--preset", "tiny",
         "max_steps=2", "max_pixels=3136", "episodes.seconds_per_frame=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["skipped"] == {} and summary["eval_loss"] is not None
    assert (out / "final" / "config.json").is_file() and (out / "final" / "tokenizer.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())["step"] == 2
    from training.model import load_model, load_tokenizer

    load_tokenizer(str(out / "final"))
    load_model(str(out / "final"))


@pytest.mark.slow
def test_loss_falls_on_a_memorisable_set_and_every_trainable_parameter_moves(corpus, tmp_path):
    out = tmp_path / "run"
    summary = train(config(corpus, out, max_dialogues=1, max_steps=30, learning_rate=1e-2,
                           warmup_ratio=0.0, lr_schedule="constant"))
    losses = summary["losses"]
    assert len(losses) == 30
    assert min(losses[-3:]) < 0.2 * losses[0], losses
    before, after = weights_of(out / "tiny-model"), weights_of(out / "final")
    assert before.keys() == after.keys()
    for name in before:
        frozen = ".visual." in f".{name}" and ".merger." not in name
        moved = not (before[name] == after[name]).all()
        assert moved != frozen, f"{name}: frozen={frozen} moved={moved}"


def test_resume_continues_the_step_count_and_the_data_order(corpus, tmp_path):
    out = tmp_path / "run"
    cfg = config(corpus, out, max_steps=5, save_every_steps=2, learning_rate=1e-3)
    first = train(cfg)
    order = (out / "data_order.jsonl").read_text().splitlines()
    weights = weights_of(out / "final")
    assert first["steps"] == 5 and len(order) == 5
    assert {tuple(json.loads(line)["items"]) for line in order[:3]} == {(0,), (1,), (2,)}  # one epoch
    # Lose everything after step 2 (mid-epoch), then run the same command again.
    for later in ("step-00000004", "step-00000005"):
        shutil.rmtree(out / "checkpoints" / later)
    shutil.rmtree(out / "final")
    second = train(cfg)
    resumed = (out / "data_order.jsonl").read_text().splitlines()[5:]
    assert second["steps"] == 5 and len(second["losses"]) == 3
    assert resumed == order[2:]
    assert second["losses"] == pytest.approx(first["losses"][2:], rel=1e-5)
    again = weights_of(out / "final")
    assert all((again[k] - weights[k]).abs().max() < 1e-6 for k in weights)
    with pytest.raises(ValueError, match="data order"):  # another seed would replay another order
        train(cfg.model_copy(update={"seed": 1}))


def test_config_file_then_cli_overrides(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("corpus: /data/c\nlearning_rate: 2.0e-5\nepisodes:\n  seconds_per_frame: 1\n")
    cfg = load_config(str(path), ["episodes.max_frames=180", "lora.enabled=true"], model="m", preset=None)
    assert (cfg.corpus, cfg.learning_rate, cfg.model) == ("/data/c", 2e-5, "m")
    assert (cfg.episodes.seconds_per_frame, cfg.episodes.max_frames, cfg.lora.enabled) == (1.0, 180, True)
    default = SFTConfig()
    assert (default.learning_rate, default.warmup_ratio, default.epochs, default.max_pixels) == (
        1e-5, 0.05, 1, 128 * 28 * 28)
    assert default.freeze_vision_tower and default.episodes.seconds_per_frame == 2.0
    with pytest.raises(ValueError):
        load_config(None, ["no_such_knob=1"])


def test_missing_or_damaged_shard_is_named(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "c")
    shard = copy / "data" / "dialogues" / "train-00000.parquet"
    shard.write_bytes(b"not parquet")
    with pytest.raises(CorpusError, match="train-00000.parquet"):
        read_split(copy)
    shard.unlink()
    with pytest.raises(CorpusError, match="train-00000.parquet.*missing"):
        read_split(copy)
    with pytest.raises(CorpusError, match="no corpus index"):
        read_split(tmp_path / "nowhere")


def test_unknown_schema_major_version_is_refused(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "c")
    shard = copy / "data" / "dialogues" / "train-00000.parquet"
    table = pq.read_table(shard)
    meta = {**table.schema.metadata, b"proactive_video.schema_version": b"2.0"}
    pq.write_table(table.replace_schema_metadata(meta), shard)
    with pytest.raises(SchemaVersionError, match="2.0"):
        read_split(copy)


def test_undecodable_video_is_skipped_and_counted(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "c")
    shutil.copyfile(ROOT / "samples" / "bad" / "truncated.mp4", copy / "videos" / "bikes.mp4")
    summary = train(config(copy, tmp_path / "run", max_steps=3))
    assert summary["skipped"] == {"video_undecodable": 2}  # both bikes dialogues, never swapped
    assert len(summary["losses"]) == 1  # the four-scenes dialogue still trains


def test_lora_trains_only_language_model_adapters():
    from training.model import apply_lora, freeze_vision_tower
    from training.tiny import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(build_tiny_tokenizer(["a b c"]))
    assert freeze_vision_tower(model) > 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(".visual." in n and ".merger." not in n for n in trainable)
    lora = apply_lora(model, rank=4, alpha=8, dropout=0.0)
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)


def test_a_checkpoint_without_chat_template_is_refused_by_name(tmp_path):
    from training.data.chat_template import ChatTemplateError
    from training.model import load_tokenizer
    from training.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(["a b c"])
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "base")
    with pytest.raises(ChatTemplateError, match="base.*no chat template"):
        load_tokenizer(str(tmp_path / "base"))


def write_offline(folder: Path, samples_dir: Path) -> Path:
    """Video QA / caption rows in the published messages/images shape, with bad rows among them."""
    from PIL import Image

    from curation.video.frames import decode_frames

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(decode_frames(samples_dir / "videos" / "bikes.mp4", [1.0, 5.0], 56 * 56)):
        Image.fromarray(frame).save(folder / f"f{i}.jpg")
    rows = [
        {"messages": [{"role": "user", "content": "<image><image>What passes by?"},
                      {"role": "assistant", "content": "A taxi and a van."}], "images": ["f0.jpg", "f1.jpg"]},
        {"messages": [{"role": "system", "content": "Describe videos."},
                      {"role": "user", "content": "<image>Caption this clip."},
                      {"role": "assistant", "content": "A street with parked cars."}], "images": [{"path": "f1.jpg"}]},
        {"messages": [{"role": "user", "content": "<image>Gone?"}, {"role": "assistant", "content": "Yes."}],
         "images": ["missing.jpg"]},
        {"messages": [{"role": "user", "content": "<image><image>Two pads, one image"},
                      {"role": "assistant", "content": "No."}], "images": ["f0.jpg"]},
        {"messages": [{"role": "user", "content": "<video>Clip?"}, {"role": "assistant", "content": "No."}],
         "videos": ["clip.mp4"]},
    ]
    path = folder / "offline.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return path


def test_offline_examples_carry_labels_only_on_the_answers(tmp_path, samples_dir):
    from collections import Counter

    from training.data.chat_template import IGNORE_INDEX, TemplateConfig, TurnRenderer
    from training.data.offline import OfflineEncoder, OfflineSource, read_offline
    from training.model import load_image_processor, load_tokenizer, prepare_tiny_checkpoint

    path = write_offline(tmp_path / "offline", samples_dir)
    skipped = Counter()
    items = read_offline(OfflineSource(path=str(path)), skipped)
    assert len(items) == 3 and skipped == {"offline_bad_row": 1, "offline_image_count_mismatch": 1,
                                           "offline_videos_unsupported": 1}
    texts = ["What passes by?", "A taxi and a van.", "Caption this clip.", "A street with parked cars."]
    model = prepare_tiny_checkpoint(texts, tmp_path / "tiny")
    tokenizer = load_tokenizer(str(model))
    encoder = OfflineEncoder(TurnRenderer(tokenizer), load_image_processor(str(model), 56 * 56), TemplateConfig())
    first, second, missing = (encoder(item) for item in items)
    for encoded, answer in ((first, "A taxi and a van."), (second, "A street with parked cars.")):
        labelled = [t for t in encoded.labels if t != IGNORE_INDEX]
        assert tokenizer.decode(labelled).replace(" ", "") == (answer + "<|im_end|>").replace(" ", "")
    assert len(first.image_grid_thw) == 2 and len(second.image_grid_thw) == 1
    assert "Describe videos." in tokenizer.decode(second.input_ids)  # the row's own system prompt
    assert missing.reason == "offline_image_unreadable"


def test_sft_mixes_offline_data_at_the_configured_ratio(corpus, tmp_path, samples_dir):
    path = write_offline(tmp_path / "offline", samples_dir)
    # 3 dialogues at 2/3 offline examples each: 2 drawn from the 3 usable rows, by a seeded draw
    summary = train(config(corpus, tmp_path / "run", max_steps=5, max_dialogues=3,
                           offline=[{"path": str(path), "ratio": 2 / 3, "name": "qa"}]))
    data = summary["data"]
    assert data["offline"] == {"qa": {"available": 3, "wanted": 2, "used": 2}}
    assert data["offline_skipped"]["offline_bad_row"] == 1
    assert data["episodes"] == 3 and 0 < data["no_reply_share"] < 1
    # weight 1 (published): NO REPLY tokens carry their own share of the loss, nothing moved
    assert data["no_reply_loss_weight"] == 1.0 and data["no_reply_label_tokens"] > 0
    assert data["no_reply_loss_share"] == data["no_reply_loss_share_unweighted"] > 0
    order = [json.loads(line)["items"] for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert sorted(i for items in order for i in items) == [0, 1, 2, 3, 4]  # 3 episodes + 2 offline rows
    assert len(summary["losses"]) + sum(summary["skipped"].values()) == 5
