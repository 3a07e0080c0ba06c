"""`training.run ablate`: variants planned from one base config, run end to end on the tiny preset,
the table checked against each run's own files, and a re-run that trains nothing."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import yaml

from schemas.cli import UsageError
from tests.conftest import SAMPLES, dialogue_row
from training.ablate_plan import AblateConfig, plan_variants, stage_keys

EVAL = {"data": [str(SAMPLES / "eval" / "web.jsonl")], "videos": str(SAMPLES / "videos")}


def ablate_config(tmp_path, **fields) -> AblateConfig:
    return AblateConfig.model_validate({"output_dir": str(tmp_path / "abl"), "eval": EVAL} | fields)


def test_term_ablations_turn_each_weighted_term_off_from_one_base():
    plans = plan_variants(AblateConfig.model_validate({"eval": EVAL, "term_ablations": True, "grpo": {"seed": 7}}))
    assert [p.variant.name for p in plans] == ["all-terms", "no-pauc", "no-repetition", "no-outspan", "no-prefix"]
    weights = {p.variant.name: (p.grpo.reward.w_pauc, p.grpo.reward.w_repetition, p.grpo.reward.w_outspan,
                                p.grpo.reward.w_prefix) for p in plans}
    assert weights["all-terms"] == (3.0, 2.0, 0.5, 2.0)  # the published run's weights (FACTS.md)
    assert weights["no-outspan"] == (3.0, 2.0, 0.0, 2.0)
    assert {p.grpo.seed for p in plans} == {7} and len({p.grpo.output_dir for p in plans}) == 5
    # the public code's weights have no prefix term: turning it off again would repeat all-terms
    code = {"w_pauc": 3, "w_repetition": 3, "w_outspan": 2, "w_prefix": 0}
    plans = plan_variants(AblateConfig.model_validate({"eval": EVAL, "term_ablations": True, "grpo": {"reward": code}}))
    assert [p.variant.name for p in plans] == ["all-terms", "no-pauc", "no-repetition", "no-outspan"]


def test_an_sft_variant_trains_sft_with_its_no_reply_weight_and_starts_grpo_from_it(tmp_path):
    cfg = ablate_config(tmp_path, grpo={"preset": "tiny"}, sft={"preset": "tiny", "max_steps": 3},
                        variants=[{"name": "base"}, {"name": "quiet", "no_reply_loss_weight": 0.3}])
    base, quiet = plan_variants(cfg)
    assert base.sft is None and base.grpo.preset == "tiny"
    assert quiet.sft.template.no_reply_loss_weight == 0.3 and quiet.sft.max_steps == 3
    assert quiet.sft.output_dir == str(tmp_path / "abl" / "quiet" / "sft")
    assert quiet.grpo.model == str(tmp_path / "abl" / "quiet" / "sft" / "final") and quiet.grpo.preset is None


def test_a_bad_variant_is_refused_by_name_before_anything_runs(tmp_path):
    with pytest.raises(UsageError, match="variant odd: grpo"):
        plan_variants(ablate_config(tmp_path, variants=[{"name": "odd", "reward": {"w_pauc": "lots"}}]))
    with pytest.raises(UsageError, match="repeat"):
        plan_variants(ablate_config(tmp_path, variants=[{"name": "a"}, {"name": "a"}]))
    with pytest.raises(UsageError, match="no variants"):
        plan_variants(ablate_config(tmp_path))


def test_each_stage_key_covers_its_settings_and_the_stage_before_it(tmp_path):
    def keys(**fields):
        cfg = ablate_config(tmp_path, variants=[{"name": "v"}], **fields)
        return stage_keys(plan_variants(cfg)[0], cfg)

    base = keys()
    parse = keys(score={"judge_parse": "last-number"})
    assert [parse[s] == base[s] for s in ("grpo", "eval", "score")] == [True, True, False]
    frames = keys(eval=EVAL | {"max_frames": 4})
    assert [frames[s] == base[s] for s in ("grpo", "eval", "score")] == [True, False, False]
    seed = keys(grpo={"seed": 1})
    assert [seed[s] == base[s] for s in ("grpo", "eval", "score")] == [False, False, False]
    assert keys(score={"judge_endpoint": {"api_key": "secret"}}) == base  # a credential is no setting
    start = tmp_path / "sft-final"
    start.mkdir()
    (start / "model.safetensors").write_bytes(b"one")
    before = keys(grpo={"model": str(start)})
    (start / "model.safetensors").write_bytes(b"retrained")
    assert keys(grpo={"model": str(start)})["grpo"] != before["grpo"]  # another start checkpoint, another run


def test_a_stage_runs_once_per_key_resumes_when_interrupted_and_clears_outputs_it_did_not_make(tmp_path):
    from training.ablate import StageBook, run_stage

    output, calls, logged = tmp_path / "v" / "predictions.jsonl", [], []

    def work(fail: bool = False):
        calls.append(output.read_text() if output.exists() else None)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text((output.read_text() if output.exists() else "") + "line\n")
        if fail:
            raise KeyboardInterrupt

    def stage(key: str, fail: bool = False) -> None:
        run_stage(StageBook(tmp_path / "v"), "eval", key, lambda: work(fail), (output,),
                  lambda st, action, **_: logged.append(action))

    output.parent.mkdir(parents=True)
    output.write_text("someone else's\n")
    with pytest.raises(KeyboardInterrupt):
        stage("k1", fail=True)  # a file it did not make is removed first; then killed mid-work
    assert calls == [None] and StageBook(tmp_path / "v").records["eval"] == {"key": "k1", "done": False, "wall_s": 0.0}
    stage("k1")  # same key, not done: resumes on what the killed attempt wrote
    assert calls == [None, "line\n"] and logged == ["run"]
    stage("k1")
    assert len(calls) == 2 and logged == ["run", "reuse"]
    stage("k2")  # other settings: its outputs go, the stage is done again
    assert calls[-1] is None and output.read_text() == "line\n" and logged[-2:] == ["redo", "run"]


# ---------------------------------------------------------------- end to end on the tiny preset

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.sample_corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("ablate-corpus"),
                        {"rl": [dialogue_row()], "train": [dialogue_row(dialogue_id="bikes-mq-1")]}, ["bikes"])


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "ablate_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ablate_end_to_end_table_matches_the_runs_files_and_a_rerun_trains_nothing(corpus, tmp_path, one_torch_thread):
    from training.rl.grpo_loss import GuardConfig, check_reward_hacking
    from training.run import main

    out = tmp_path / "abl"
    config = tmp_path / "ablate.yaml"
    # 2 turns of 2 frames at 56x56 (4 visual tokens each), 4 rollouts of <= 4 tokens a turn, one step;
    # a third variant trains SFT first (one step) with NO REPLY weighted 0.5, and GRPO from it
    small = {"corpus": str(corpus), "max_pixels": 3136, "episodes": {"max_frames": 4}, "max_steps": 1,
             "save_every_steps": 1000}
    config.write_text(yaml.safe_dump({
        "output_dir": str(out),
        "grpo": small | {"max_new_tokens_per_turn": 4, "micro_batch_rollouts": 4, "judge": "offline"},
        "sft": small,
        "variants": [{"name": "all-terms"}, {"name": "no-outspan", "reward": {"w_outspan": 0}},
                     {"name": "quiet", "no_reply_loss_weight": 0.5}],
        "eval": EVAL | {"max_frames": 4, "max_pixels": 3136, "max_new_tokens_per_turn": 3},
    }))
    assert main(["ablate", "--config", str(config), "--preset", "tiny"]) == 0
    first_log = log_lines(out)
    assert [(x["variant"], x["stage"], x["action"]) for x in first_log] == [
        (v, s, "run") for v in ("all-terms", "no-outspan") for s in ("grpo", "eval", "score")] + [
        ("quiet", s, "run") for s in ("sft", "grpo", "eval", "score")]

    with (out / "ablation.csv").open() as source:
        rows = {r["variant"]: r for r in csv.DictReader(source)}
    assert list(rows) == ["all-terms", "no-outspan", "quiet"]
    for name, row in rows.items():
        folder = out / name
        summary = json.loads((folder / "grpo" / "summary.json").read_text())
        score = json.loads((folder / "score.json").read_text())
        latency = json.loads((folder / "predictions.latency.json").read_text())
        stages = json.loads((folder / "stages.json").read_text())
        predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        [step] = summary["history"]
        assert summary["steps"] == int(row["grpo_steps"]) == 1
        for term in ("pauc", "repetition", "outspan", "prefix", "total"):
            assert float(row[f"reward_{term}"]) == pytest.approx(step[f"reward_{term}"])
        # the variant's weights reached the reward: published 3/2/0.5/2, outspan 0 in no-outspan
        w_outspan = {"all-terms": 0.5, "no-outspan": 0.0, "quiet": 0.5}[name]
        assert float(row["w_outspan"]) == w_outspan
        assert step["reward_total"] == pytest.approx(3 * step["reward_pauc"] + 2 * step["reward_repetition"]
                                                     + w_outspan * step["reward_outspan"] + 2 * step["reward_prefix"])
        tripped = check_reward_hacking(step["reward_repetition"], step["mean_reply_chars"], GuardConfig()).tripped
        assert int(row["guard_triggers"]) == int(tripped)
        for omega in ("0", "0.5", "1"):
            assert float(row[f"pauc_w{omega}_web"]) == pytest.approx(score["categories"]["web"][f"pauc_omega_{omega}"])
        assert float(row["duplicate_rate"]) == pytest.approx(score["overall"]["duplicate_rate"])
        replies = [r["content"] for p in predictions for r in p["model_response_list"]]
        assert len(predictions) == 2 and latency["turns"] > 0
        assert float(row["reply_rate"]) == pytest.approx(len(replies) / latency["turns"])  # eval's own turn count
        assert float(row["mean_reply_chars"]) == pytest.approx(sum(map(len, replies)) / len(replies))
        assert float(row["train_wall_s"]) == pytest.approx(stages["grpo"]["wall_s"] + stages.get("sft", {}).get("wall_s", 0))
        assert float(row["eval_wall_s"]) == pytest.approx(stages["eval"]["wall_s"] + stages["score"]["wall_s"])
    # one start, seed and prompts: the same tiny start checkpoint and the same RL prompt order
    starts = {name: {p.name: sha(p) for p in (out / name / "grpo" / "tiny-model").glob("*.safetensors")} for name in rows}
    assert starts["all-terms"] == starts["no-outspan"] != {} and starts["quiet"] == {}  # quiet starts from its SFT
    orders = {name: (out / name / "grpo" / "data_order.jsonl").read_text() for name in rows}
    assert orders["all-terms"] == orders["no-outspan"] == orders["quiet"]
    # the SFT variant: its weight, and the share of SFT's loss weight its data summary gives NO REPLY
    data = json.loads((out / "quiet" / "sft" / "summary.json").read_text())["data"]
    assert rows["quiet"]["no_reply_loss_weight"] == "0.5" and rows["all-terms"]["no_reply_loss_weight"] == ""
    assert float(rows["quiet"]["sft_no_reply_loss_share"]) == data["no_reply_loss_share"]
    assert data["no_reply_loss_weight"] == 0.5 and 0 < data["no_reply_loss_share"] < data["no_reply_loss_share_unweighted"]
    markdown = (out / "ablation.md").read_text()
    assert all(f"| {name} |" in markdown for name in rows)
    assert (out / "ablation.png").stat().st_size > 10_000

    # a re-run trains, evaluates and scores nothing: every stage reused, no output file rewritten
    outputs = [p for name in rows for p in [out / name / "grpo" / "summary.json", out / name / "predictions.jsonl",
                                            out / name / "score.json", *(out / name / "grpo" / "final").iterdir()]]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    assert main(["ablate", "--config", str(config), "--preset", "tiny"]) == 0
    again = log_lines(out)[len(first_log):]
    assert {x["action"] for x in again} == {"reuse"} and len(again) == 10
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    with (out / "ablation.csv").open() as source:
        assert {r["variant"]: r for r in csv.DictReader(source)} == rows

    # another judge-reply parser re-scores only; another reward for a trained variant is refused
    assert main(["ablate", "--config", str(config), "--preset", "tiny", "score.judge_parse=last-number"]) == 0
    logged = log_lines(out)
    rescored = logged[len(first_log) + 10:]
    assert [(x["stage"], x["action"]) for x in rescored if x["action"] != "reuse"] == [("score", "redo"), ("score", "run")] * 3
    assert json.loads((out / "all-terms" / "score.json").read_text())["judge_parse"] == "last-number"
    assert (out / "all-terms" / "predictions.jsonl").stat().st_mtime_ns == before[out / "all-terms" / "predictions.jsonl"]
    changed = config.read_text().replace("w_outspan: 0", "w_outspan: 1")
    config.write_text(changed)
    assert main(["ablate", "--config", str(config), "--preset", "tiny"]) == 2
    assert log_lines(out) == logged  # refused before anything ran
