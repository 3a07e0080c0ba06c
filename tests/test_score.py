"""`score` (the ProactiveVideoQA variant) on a small prediction file whose PAUC is worked out by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from schemas import Dialogue
from tests.conftest import ROOT, dialogue_row
from training.eval.proactive_format import (
    dialogue_to_gold,
    gold_to_dialogue,
    parse_gold_record,
    prediction_line,
    read_gold,
    read_predictions,
)
from training.eval.score import cli, drop_late_regressions, score_predictions
from training.rl.judge import Judge

# web/q1: answer a1 related [2, 8] -> reply [2, 9]; answer a2 related [20, 25] -> reply [20, 26]
# ego/q2: answer b1 related [0, 10] -> reply [0, 11]; ego/q3 has no prediction line at all.
GOLD = [
    {"video": "w1.mp4", "question_id": "q1", "duration": 30.0, "category": "web",
     "conversation": [{"role": "user", "content": "What happens?", "time": 0}],
     "answer": [
         {"role": "assistant", "content": "A man opens the door.", "related_timespan": [2, 8], "reply_timespan": [2, 9]},
         {"role": "assistant", "content": "He sits down.", "related_timespan": [20, 25], "reply_timespan": [20, 26]},
     ]},
    {"video": "e1.mp4", "question_id": "q2", "duration": 20.0, "category": "ego",
     "conversation": [{"role": "user", "content": "What am I doing?", "time": 0}],
     "answer": [{"role": "assistant", "content": "You cut an onion.", "related_timespan": [0, 10],
                 "reply_timespan": [0, 11]}]},
    {"video": "e2.mp4", "question_id": "q3", "duration": 20.0, "category": "ego",
     "conversation": [{"role": "user", "content": "What is in the pan?", "time": 0}],
     "answer": [{"role": "assistant", "content": "Eggs.", "related_timespan": [5, 9], "reply_timespan": [5, 10]}]},
]
WALK, OPENS, WAVES = "A man walks in.", "He opens the door.", "He waves."
SLICE, WASH = "You slice an onion.", "You wash a knife."
PREDICTIONS = [
    prediction_line("q1", [(4, WALK), (6, WALK), (8, OPENS), (10, WAVES), (12, "NO REPLY")]),
    prediction_line("q2", [(3, SLICE), (10.5, WASH)]),
]
# The judge sees the concatenation of the distinct in-span replies so far (3-level rubric).
SCORES = {
    ("A man opens the door.", WALK): 2,  # -> 1
    ("A man opens the door.", f"{WALK} {OPENS}"): 3,  # -> 2
    ("You cut an onion.", SLICE): 3,  # -> 2
    ("You cut an onion.", f"{SLICE} {WASH}"): 2,  # -> 1, after the related span and lower: dropped
}
REPETITION = {OPENS: False, WAVES: False, WASH: True}

# a1, window 7 s, max_y 2: points (4 - 2 = 2, 1), (8 - 2 = 6, 2)
A1 = {0.0: (0.5 * 2 + 1 * 4 + 2 * 1) / 14,  # x 2, 6 -> 7 / 14 = 0.5
      0.5: (0.5 * 1 + 1 * 2 + 2 * 4) / 14,  # x 1, 3 -> 10.5 / 14 = 0.75
      1.0: (2 * 7) / 14}  # x 0, 0 -> the last y over the whole window = 1
# b1, window 11 s: only (3, 2) survives the drop rule
B1 = {0.0: (0.5 * 3 + 2 * 8) / 22,  # 17.5 / 22
      0.5: (0.5 * 1.5 + 2 * 9.5) / 22,  # 19.75 / 22
      1.0: 22 / 22}
EMPTY = 0.25  # a2 and q3's answer: no judged reply -> 0.5 / 2


class ScriptedJudge(Judge):
    def __init__(self):
        self.calls = 0

    def score_replies(self, items):
        assert all(i.scale == 3 for i in items)
        return [SCORES[(i.reference, i.reply)] for i in items]

    def is_repetition(self, items):
        return [REPETITION[i.reply] for i in items]

    def judge_batch(self, score_items, repetition_items):
        self.calls += 1
        return super().judge_batch(score_items, repetition_items)


@pytest.fixture
def files(tmp_path):
    gold, preds = tmp_path / "bench-gold.json", tmp_path / "pred.jsonl"
    gold.write_text(json.dumps(GOLD))
    preds.write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS) + "{not json\n")
    return gold, preds


def test_score_reproduces_the_hand_computed_pauc(files):
    gold, preds = files
    judge = ScriptedJudge()
    result = score_predictions(read_gold(gold), read_predictions(preds), judge)
    assert judge.calls == 1
    for omega in (0.0, 0.5, 1.0):
        key = f"pauc_omega_{omega:g}"
        web = (A1[omega] + EMPTY) / 2
        ego = (B1[omega] + EMPTY) / 2
        overall = (A1[omega] + EMPTY + B1[omega] + EMPTY) / 4
        assert result["categories"]["web"][key] == pytest.approx(100 * web)
        assert result["categories"]["ego"][key] == pytest.approx(100 * ego)
        assert result["overall"][key] == pytest.approx(100 * overall)
    assert result["overall"]["pauc_omega_1"] == pytest.approx(62.5)  # (1 + 0.25 + 1 + 0.25) / 4
    # duplicates: q1 [no, exact yes, no, no] = 1/4; q2 [no, judged yes] = 1/2; pooled 2/6
    assert result["categories"]["web"]["duplicate_rate"] == pytest.approx(25.0)
    assert result["categories"]["ego"]["duplicate_rate"] == pytest.approx(50.0)
    assert result["overall"]["duplicate_rate"] == pytest.approx(100 * 2 / 6)
    assert result["overall"]["questions_without_prediction"] == 1
    assert len(result["bad_prediction_lines"]) == 1


def test_drop_rule_keeps_late_judgements_that_do_not_regress():
    judged = [(3.0, 2), (10.5, 1), (10.8, 2)]
    assert drop_late_regressions(judged, related_end_s=10.0) == [(3.0, 2), (10.8, 2)]
    assert drop_late_regressions([(10.5, 0)], related_end_s=10.0) == [(10.5, 0)]  # a lone judgement stays


def test_failed_judge_calls_are_dropped(files):
    gold, preds = files

    class Failing(ScriptedJudge):
        def score_replies(self, items):
            return [None if i.reply == WALK else SCORES[(i.reference, i.reply)] for i in items]

    result = score_predictions(read_gold(gold), read_predictions(preds), Failing())
    # a1 keeps only (6, 2): at omega 0.5, x = 3: 0.5 * 3 + 2 * 4 = 9.5; / 14
    web = (9.5 / 14 + EMPTY) / 2
    assert result["categories"]["web"]["pauc_omega_0.5"] == pytest.approx(100 * web)
    assert result["judge_failures"] == 1


# The judge's replies to a1's and b1's items, chosen to separate the parsers (scale 3; readings as
# in tests/test_judge.py::SEPARATING): (first-char, last-number, lenient)
JUDGE_TEXTS = {
    WALK: "Score: 2 (out of 3)",  # None, 3, 2
    f"{WALK} {OPENS}": "3",  # 3, 3, 3
    SLICE: "10",  # 1, None, None
    f"{SLICE} {WASH}": "The answer is wrong. 1",  # None, 1, 1
}


def judge_stub_reply(body):
    from tests.openai_stub import Reply

    user = body["messages"][-1]["content"]
    if "New Turn:" in user:
        return Reply.text("yes" if f"New Turn: {WASH}" in user else "no")
    reply = user.split("Predicted Answer: ", 1)[1].split("\n", 1)[0]
    return Reply.text(JUDGE_TEXTS[reply])


def test_compare_parsers_reads_one_round_of_judge_replies_under_each_parser(files, tmp_path, capsys):
    from tests.openai_stub import StubServer

    gold, preds = files
    out = tmp_path / "compare.json"
    with StubServer(judge_stub_reply) as stub:
        assert cli(["--predictions", str(preds), "--references", str(gold), "--judge", "openai",
                    "--judge-base-url", stub.url, "--compare-parsers", "--json", str(out)]) == 0
        assert len(stub.requests) == 4 + 3  # one round: 4 score items, 3 repetition questions
    result = json.loads(out.read_text())
    by = result["parsers"]
    assert list(by) == ["first-char", "last-number", "lenient"]  # the chosen (default) parser first
    # omega 0.5, window a1 = [2, 9] (7 s), b1 = [0, 11] (11 s), max_y 2, x = (t - s) / 2:
    # first-char:  a1 keeps (8, 3 - 1 = 2): x 3 -> 0.5 * 3 + 2 * 4 = 9.5;   b1 keeps (3, 1 - 1 = 0): x 1.5 -> 0.75
    # last-number: a1 (4, 2), (8, 2): x 1 -> 0.5 * 1 + 2 * 6 = 12.5;        b1 (10.5, 0): x 5.25 -> 2.625
    # lenient:     a1 (4, 1), (8, 2): x 1, 3 -> 0.5 + 1 * 2 + 2 * 4 = 10.5; b1 (10.5, 0) -> 2.625
    areas = {"first-char": (9.5, 0.75), "last-number": (12.5, 2.625), "lenient": (10.5, 2.625)}
    for name, (a1, b1) in areas.items():
        assert by[name]["categories"]["web"]["pauc_omega_0.5"] == pytest.approx(100 * (a1 / 14 + EMPTY) / 2)
        assert by[name]["categories"]["ego"]["pauc_omega_0.5"] == pytest.approx(100 * (b1 / 22 + EMPTY) / 2)
        assert by[name]["overall"]["duplicate_rate"] == pytest.approx(100 * 2 / 6)  # yes/no: no parser involved
    # unparsed: first-char 2 ("Score...", "The answer..."), last-number 1 ("10"), lenient 1 ("10")
    assert [by[n]["unparsed_judge_replies"] for n in by] == [2, 1, 1]
    differing = {d["judge_reply"]: d["scores"] for d in result["disagreements"]}
    assert differing == {
        "Score: 2 (out of 3)": {"first-char": None, "last-number": 3, "lenient": 2},
        "10": {"first-char": 1, "last-number": None, "lenient": None},
        "The answer is wrong. 1": {"first-char": None, "last-number": 1, "lenient": 1},
    }
    printed = capsys.readouterr().out
    assert "'Score: 2 (out of 3)'" in printed and "'The answer is wrong. 1'" in printed
    assert "first-char" in printed and "last-number" in printed and "lenient" in printed


def test_judge_parse_selects_one_parser(files, tmp_path):
    from tests.openai_stub import StubServer

    gold, preds = files
    out = tmp_path / "one.json"
    with StubServer(judge_stub_reply) as stub:
        assert cli(["--predictions", str(preds), "--references", str(gold), "--judge", "openai",
                    "--judge-base-url", stub.url, "--judge-parse", "last-number", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["judge_parse"] == "last-number"
    assert result["categories"]["web"]["pauc_omega_0.5"] == pytest.approx(100 * (12.5 / 14 + EMPTY) / 2)


def test_cli_writes_json_with_the_offline_judge(files, tmp_path):
    gold, preds = files
    out = tmp_path / "scores.json"
    assert cli(["--predictions", str(preds), "--references", str(gold), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["categories"]) == {"web", "ego"}
    assert result["omega"] == 0.5
    assert 0 <= result["overall"]["pauc_omega_0.5"] <= 100
    assert cli(["--predictions", str(preds), "--references", str(tmp_path / "missing.json")]) == 2


def test_module_runs_directly(files, tmp_path):
    gold, preds = files
    out = tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "training.eval.score", "--predictions", str(preds),
                           "--references", str(gold), "--omega", "0.25", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "overall" in done.stdout
    assert "pauc_omega_0.25" in json.loads(out.read_text())["overall"]


def test_gold_records_from_our_dialogues_and_back():
    dialogue = Dialogue.model_validate(dialogue_row())
    records = dialogue_to_gold(dialogue, category="sample")
    assert [r["question_id"] for r in records] == ["bikes-mq-0-q0", "bikes-mq-0-q1"]
    # reply_timespan = [related start, min(related end + 1, duration = 10)]
    assert records[0]["answer"][0]["reply_timespan"] == [1.2, 4.0]
    assert records[1]["answer"][0]["reply_timespan"] == [7.5, 10.0]
    assert records[1]["conversation"][0]["time"] == 6.0
    back = gold_to_dialogue(parse_gold_record(records[0]))
    assert back.references[0].reply_span == (1.2, 3.0)
    assert back.user_turns[0].text == "Who walks past the cars?"


def test_malformed_gold_is_refused_with_its_id():
    bad = {**GOLD[2], "answer": [{"content": "x", "reply_timespan": [5, 5]}]}
    with pytest.raises(ValueError, match="q3.*zero-length"):
        parse_gold_record(bad)
    with pytest.raises(ValueError, match="q3.*malformed"):
        parse_gold_record({**GOLD[2], "answer": [{"content": "x"}]})


def test_predictions_of_another_set_are_an_error_and_a_partial_match_a_warning(files, tmp_path, capsys):
    gold, preds = files
    assert cli(["--predictions", str(preds), "--references", str(gold)]) == 0
    warning = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    # q3 has no line (it scores the no-reply value), every line names a question
    assert warning == ["warning: 2 of 3 questions have a prediction line; 1 without one score the no-reply value; "
                       "0 prediction line(s) name no question of the references"]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question_id": "web-bikes-0", "model_response_list": []}) + "\n")
    assert cli(["--predictions", str(other), "--references", str(gold)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none of its 1 question ids matches the 3 questions" in err
    assert "\n" not in err and "PAUC" not in capsys.readouterr().out
