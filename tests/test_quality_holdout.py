"""The quality gate on a held-out labelled set (`tests/quality_cases_holdout.py`): dialogues written
before the gate was read, over the sample's segments and invented videos of other styles (cooking,
sports and lecture ASR, egocentric narration, scene captions). Prints the kept and rejected rates
per class and every case on the wrong side, directly and through the dialogue stage over HTTP.

Garbage the gate lets through needs meaning to catch: answers that contradict their segment ("a blue
frisbee" where it is red), answers grounded in their segment that answer another question, and an
invented detail beside a word the segment has ("Ground beef is browned in the pan"). They stay in
the set, so the rate says how much of that a lexical gate misses.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from curation.text.config import DialogueConfig
from curation.text.dialogues import generate_dialogues
from tests.openai_stub import Reply, StubServer
from tests.quality_cases_holdout import GARBAGE, GOOD, VIDEOS, Case, segments_of
from tests.test_dialogues import stub_client
from tests.test_quality_gate import verdict, video


def _video(video_id: str):
    return video(video_id, VIDEOS[video_id].duration_s)


def _kept_directly(case: Case) -> bool:
    return not verdict(_video(case.video_id), segments_of(case.video_id), case.kind, case.data)


def _stage_outcome(case: Case) -> str:
    """One dialogue of the case's kind through `generate_dialogues` and a real HTTP server that
    answers every request, the repair too, with the case's reply: "kept" or the quarantine reason."""
    cfg = DialogueConfig(min_dialogues=1, max_dialogues=1,
                         single_question_share=1.0 if case.kind == "single_question" else 0.0)
    with StubServer(Reply.json(case.data)) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(_video(case.video_id), segments_of(case.video_id), [], client, cfg)
    return "kept" if outcome.dialogues else outcome.quarantined[0].reason


def _report(what: str, good: list[Case], garbage: list[Case], kept) -> tuple[float, float]:
    per: dict[str, Counter] = defaultdict(Counter)
    wrong = []
    for side, cases in (("good", good), ("garbage", garbage)):
        for case in cases:
            right = kept(case) == (side == "good")
            per[f"{side}/{case.cls}"][right] += 1
            if not right:
                wrong.append(f"  {side} {case.cls} on {case.video_id}: {case.why}")
    kept_rate = sum(per[k][True] for k in per if k.startswith("good/")) / len(good)
    rejected_rate = sum(per[k][True] for k in per if k.startswith("garbage/")) / len(garbage)
    print(f"\nheld-out set, {what}: {kept_rate:.1%} of {len(good)} good kept, "
          f"{rejected_rate:.1%} of {len(garbage)} garbage rejected")
    print("  " + ", ".join(f"{k} {c[True]}/{c.total()}" for k, c in sorted(per.items())))
    print("\n".join(wrong))
    return kept_rate, rejected_rate


def test_held_out_set_keeps_good_dialogues_and_rejects_garbage():
    assert len(GOOD) >= 60 and len(GARBAGE) >= 60
    kept, rejected = _report("validator and gate", GOOD, GARBAGE, _kept_directly)
    assert kept >= 0.95 and rejected >= 0.9


def test_held_out_set_through_the_stage_and_a_stand_in_server():
    """The stage keeps exactly what the validator and gate keep, and quarantines the rest with the
    reason of the check that refused it."""
    good, garbage = GOOD[::3], GARBAGE[::3]
    outcomes = {id(c): _stage_outcome(c) for c in good + garbage}
    _report("through the stage", good, garbage, lambda c: outcomes[id(c)] == "kept")
    for case in good + garbage:
        assert (outcomes[id(case)] == "kept") == _kept_directly(case), case
        assert outcomes[id(case)] in {"kept", "low_quality", "invalid_dialogue", "forbidden_text"}
    assert "low_quality" in outcomes.values()
