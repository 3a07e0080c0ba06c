"""Each validation rule rejects a dialogue planted to break it; a good dialogue passes them all."""

from __future__ import annotations

import copy

import pytest

from curation.text.dialogue_validation import dialogue_problems, restated_share, similarity
from curation.text.dialogues import DialogueConfig
from curation.text.source_text import read_source_segments
from schemas.records import Dialogue, Provenance, ReferenceAnswer, UserTurn
from tests.conftest import SAMPLES, dialogue_row

SEGMENTS = read_source_segments(SAMPLES / "text" / "bikes.csv", "bikes")
CFG = DialogueConfig()


def construct(row: dict) -> Dialogue:
    """A dialogue built WITHOUT validation, as the generator holds it before checking."""
    return Dialogue.model_construct(
        **{k: v for k, v in row.items() if k not in ("user_turns", "references", "provenance")},
        user_turns=[UserTurn.model_construct(**t) for t in row["user_turns"]],
        references=[ReferenceAnswer.model_construct(**{"evidence": [], "immediate": False, **r,
                                                       "reply_span": tuple(r["reply_span"])})
                    for r in row["references"]],
        provenance=Provenance(**row["provenance"]))


def ref(qid: str, question: str, answer: str, span, evidence, immediate=False) -> dict:
    return {"question_id": qid, "question": question, "answer": answer, "reply_span": span,
            "evidence": evidence, "immediate": immediate}


Q0, Q1 = "Who walks past the cars?", "What is behind the bollards?"


def test_the_reference_dialogue_is_valid():
    assert dialogue_problems(Dialogue.model_validate(dialogue_row()), SEGMENTS, CFG) == []
    assert dialogue_problems(construct(dialogue_row()), SEGMENTS, CFG) == []


def _unknown_segment(row):
    row["references"][1]["evidence"] = ["bikes-s0042"]


def _other_videos_segment(row):
    row["references"][1]["evidence"] = ["bigbuckbunny-s0001"]


def _window_misses_citation(row):
    row["references"][0]["evidence"] = ["bikes-s0005"]


def _answer_before_question(row):
    row["references"][1] = ref("bikes-mq-0-q1", Q1, "A van waits in traffic.", [4.0, 6.0], ["bikes-s0003"])


def _answer_after_next_question(row):
    row["references"][0] = ref("bikes-mq-0-q0", Q0, "A pedestrian.", [7.5, 10.0], ["bikes-s0005"])


def _near_duplicate_answers(row):
    row["references"].append(ref("bikes-mq-0-q1", Q1, "A bicycle chained to a railing here.", [6.0, 7.5],
                                 ["bikes-s0004"]))


def _restated_answer(row):
    question = "Is a bicycle chained to a railing?"
    row["user_turns"][1]["text"] = question
    row["references"][1]["question"] = question


def _too_few_questions(row):
    row["user_turns"] = row["user_turns"][:1]
    row["references"] = row["references"][:1]


def _question_after_the_end(row):
    row["user_turns"][1]["time_s"] = 12.0


def _window_after_the_end(row):
    row["references"][1]["reply_span"] = [7.5, 11.0]


def _immediate_reply_at_start(row):
    row["references"].insert(0, ref("bikes-mq-0-q0", Q0, "Nothing yet.", [0.0, 1.0], [], immediate=True))


def _no_reply_marker(row):
    row["references"][1]["answer"] = "NO REPLY"


def _same_segment_twice(row):
    row["references"].append(ref("bikes-mq-0-q1", Q1, "Two bollards stand in front.", [7.5, 10.0],
                                 ["bikes-s0005"]))


def _same_time_questions(row):
    row["user_turns"][1]["time_s"] = 0.0


def _unanswered_question(row):
    row["references"] = row["references"][:1]


PLANTED = [
    (_unknown_segment, "not a segment of video 'bikes'"),
    (_other_videos_segment, "not a segment of video 'bikes'"),
    (_window_misses_citation, "does not overlap its cited segment"),
    (_answer_before_question, "before the question is asked"),
    (_answer_after_next_question, "after the next question is asked"),
    (_near_duplicate_answers, "near-duplicate answers"),
    (_restated_answer, "gives its answer away"),
    (_too_few_questions, "1 questions; write between 2 and 4"),
    (_question_after_the_end, "after the video ends"),
    (_window_after_the_end, "outside the video"),
    (_immediate_reply_at_start, "opens the video"),
    (_no_reply_marker, "'NO REPLY' marker"),
    (_same_segment_twice, "both cite segment 'bikes-s0005'"),
    (_same_time_questions, "asked at the same segment"),
    (_unanswered_question, "has no reference answer"),
]


@pytest.mark.parametrize("plant, expected", PLANTED, ids=[p.__name__.strip("_") for p, _ in PLANTED])
def test_each_rule_rejects_its_planted_dialogue(plant, expected):
    row = copy.deepcopy(dialogue_row())
    plant(row)
    problems = dialogue_problems(construct(row), SEGMENTS, CFG)
    assert any(expected in p for p in problems), problems


def test_answer_count_bounds_come_from_config():
    row = copy.deepcopy(dialogue_row())
    _same_segment_twice(row)
    row["references"][-1]["evidence"] = ["bikes-s0004"]
    row["references"][-1]["reply_span"] = [6.0, 7.5]
    assert dialogue_problems(construct(row), SEGMENTS, CFG) == []
    tight = DialogueConfig(max_answers=1)
    assert any("has 2 answers; give between 1 and 1" in p for p in dialogue_problems(construct(row), SEGMENTS, tight))


def test_single_question_must_be_asked_at_the_start():
    row = copy.deepcopy(dialogue_row(kind="single_question"))
    row["user_turns"], row["references"] = row["user_turns"][1:], row["references"][1:]
    problems = dialogue_problems(construct(row), SEGMENTS, CFG)
    assert any("not at the start" in p for p in problems)


def test_a_question_already_asked_about_the_video_is_rejected():
    problems = dialogue_problems(construct(dialogue_row()), SEGMENTS, CFG, earlier_questions=["Who walks past the cars ?"])
    assert any("repeats a question already asked" in p for p in problems)


def test_measures():
    assert similarity("A man walks by.", "a man walks by") == 1.0
    assert similarity("A man walks.", "A woman runs.") < 0.5
    assert restated_share("Does a cyclist ride past a van?", "A cyclist rides past a van.") == 1.0
    assert restated_share("What moves on the street?", "A cyclist rides past a van.") == 0.0
    assert restated_share("Who is riding?", "A cyclist rides.") == 0.5
    assert restated_share("Anything?", "Yes.") == 0.0  # no content words: judged by other rules
