"""The RL reward on hand-made episodes whose reward is worked out by hand in each test.

Unless a test says otherwise: one reference window [10, 20] s, a turn every 2 s from 0 to 30 s
(16 turns, 10 of them outside the window), published-run weights 3, 2, 0.5, 2, judge scale 5
(raw score 5 -> y = 4), floor time weight 0.5, start score 0.5.
"""

from __future__ import annotations

import pytest

from schemas import NO_REPLY, ReferenceAnswer
from training.rl.judge import Judge, OfflineJudge
from training.rl.reward import REWARD_PRESETS, RewardConfig, Rollout, Turn, compute_rewards

QUESTION = "What is on the table?"
ANSWER = "A red cup next to a laptop."


def ref(start_s: float, end_s: float, answer: str = ANSWER) -> ReferenceAnswer:
    return ReferenceAnswer(question_id="v-q0", question=QUESTION, answer=answer, reply_span=(start_s, end_s))


def episode(replies: dict[float, str], last_s: float = 30.0) -> list[tuple[float, str]]:
    times = [float(t) for t in range(0, int(last_s) + 1, 2)]
    return [(t, replies.get(t, NO_REPLY)) for t in times]


class ScriptedJudge(Judge):
    """Fixed answers keyed by (reference, reply) and by reply; an unexpected question fails the test."""

    def __init__(self, scores=None, repetition=None):
        self.scores = scores or {}
        self.repetition = repetition or {}
        self.batches: list[tuple[list, list]] = []

    def score_replies(self, items):
        return [self.scores[(i.reference, i.reply)] for i in items]

    def is_repetition(self, items):
        return [self.repetition[i.reply] for i in items]

    def judge_batch(self, score_items, repetition_items):
        self.batches.append((list(score_items), list(repetition_items)))
        return super().judge_batch(score_items, repetition_items)


def one(replies, judge, refs=None, cfg=None, last_s=30.0):
    return compute_rewards([episode(replies, last_s)], [refs or [ref(10, 20)]], judge, cfg)[0]


def test_no_reply_at_all():
    judge = ScriptedJudge()
    r = one({}, judge)
    # PAUC: nothing judged -> 0.5 * 10 / (10 * 4) = 0.5 / 4 = 0.125; no reply -> no other penalty
    assert r.reward_pauc == pytest.approx(0.5 / 4)
    assert (r.reward_repetition, r.reward_outspan, r.reward_prefix) == (0.0, 0.0, 0.0)
    assert r.total == pytest.approx(3 * 0.125)  # 0.375
    assert judge.batches == [([], [])]


def test_one_perfect_reply_at_the_window_start():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5})
    r = one({10.0: ANSWER}, judge)
    # point (x = 0, y = 4): area 4 * 10 = 40 / 40 = 1; first reply has nothing earlier -> not a repetition
    assert r.reward_pauc == pytest.approx(1.0)
    assert r.reward_repetition == 0.0
    assert r.total == pytest.approx(3.0)
    assert judge.batches[0][1] == []  # no repetition question for the first reply


def test_the_same_reply_at_the_window_end():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5})
    r = one({20.0: ANSWER}, judge)
    # x = (20 - 10) * (1 - 0.5) = 5: 0.5 * 5 + 4 * (10 - 5) = 22.5; / 40 = 0.5625
    assert r.reward_pauc == pytest.approx(0.5625)
    assert r.total == pytest.approx(3 * 0.5625)  # 1.6875


def test_replies_outside_every_window():
    judge = ScriptedJudge(repetition={"A laptop is open.": False})
    r = one({2.0: "Someone walks in.", 26.0: "A laptop is open."}, judge)
    # outside turns: 0..8 and 22..30 = 10 turns, 2 of them replies -> -(2 / 10) = -0.2
    assert r.reward_outspan == pytest.approx(-0.2)
    assert r.reward_pauc == pytest.approx(0.125)  # nothing in the window
    assert r.reward_repetition == 0.0  # first: no earlier reply; second: judged "no"
    assert r.total == pytest.approx(3 * 0.125 + 0.5 * -0.2)  # 0.375 - 0.1 = 0.275


def test_an_exact_duplicate():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5})
    r = one({10.0: ANSWER, 14.0: ANSWER}, judge)
    # PAUC: the duplicate is not scored again -> (0, 4) only -> 1.0
    # repetition: first "no", duplicate "yes" without asking -> -(1 / 2) = -0.5
    # prefix: the text is 27 characters, under 50 -> 0
    assert r.reward_pauc == pytest.approx(1.0)
    assert r.reward_repetition == pytest.approx(-0.5)
    assert r.reward_prefix == 0.0
    assert r.total == pytest.approx(3 * 1.0 + 2 * -0.5)  # 2.0
    scored, asked = judge.batches[0]
    assert len(scored) == 1 and asked == []


PREFIX_50 = "The person on the left is now lifting a small red "
assert len(PREFIX_50) == 50


def test_a_50_character_common_prefix():
    first, second = PREFIX_50 + "cup.", PREFIX_50 + "mug."
    judge = ScriptedJudge(scores={(ANSWER, first): 5, (ANSWER, second): 3}, repetition={second: False})
    r = one({10.0: first, 16.0: second}, judge)
    # prefix: first 0, second shares 50 characters -> 1; mean over 2 replies -> -0.5
    assert r.reward_prefix == pytest.approx(-0.5)
    # PAUC: (0, 4) and ((16 - 10) * 0.5 = 3, 2): 4 * 3 + 2 * (10 - 3) = 26; / 40 = 0.65
    assert r.reward_pauc == pytest.approx(0.65)
    assert r.reward_repetition == 0.0
    assert r.total == pytest.approx(3 * 0.65 + 2 * -0.5)  # 0.95


def test_a_49_character_common_prefix_is_not_counted():
    first, second = PREFIX_50[:49] + "Xcup.", PREFIX_50[:49] + "Ymug."
    judge = ScriptedJudge(scores={(ANSWER, first): 5, (ANSWER, second): 5}, repetition={second: False})
    assert one({10.0: first, 16.0: second}, judge).reward_prefix == 0.0


def test_a_failed_judge_call_is_dropped_not_scored_zero():
    later = "There is a red cup on the table."
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): None, (ANSWER, later): 5}, repetition={later: None})
    r = one({10.0: ANSWER, 14.0: later}, judge)
    # only ((14 - 10) * 0.5 = 2, 4) remains: 0.5 * 2 + 4 * 8 = 33; / 40 = 0.825
    # (a failure scored 0 would give 0 * 2 + 4 * 8 = 32 / 40 = 0.8)
    assert r.reward_pauc == pytest.approx(0.825)
    # repetition: first "no", second's call failed -> dropped -> -(0 / 1) = 0
    assert r.reward_repetition == 0.0
    assert r.n_judge_failures == 2
    assert r.total == pytest.approx(3 * 0.825)


def test_windows_sharing_a_boundary_keep_their_own_scores():
    other = "The cup is put away."
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5, (other, ANSWER): 1})
    r = one({20.0: ANSWER}, judge, refs=[ref(10, 20), ref(20, 30, other)])
    # window 1: x = 10 * 0.5 = 5, y = 4 -> 0.5625; window 2: x = 0, y = 0 -> 0
    # (keyed by reply time, the second score would overwrite the first)
    assert r.window_pauc == pytest.approx([0.5625, 0.0])
    assert r.reward_pauc == pytest.approx(0.28125)


def test_a_window_starting_after_the_last_turn_is_not_counted():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5})
    r = one({10.0: ANSWER}, judge, refs=[ref(10, 20), ref(25, 30, "Later.")], last_s=24.0)
    assert r.n_windows == 1
    assert r.reward_pauc == pytest.approx(1.0)


def test_a_group_is_judged_in_one_batch_and_context_replies_count_as_earlier():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5}, repetition={})
    with_context = Rollout(tuple(Turn(t, x) for t, x in episode({10.0: ANSWER})), context_replies=(ANSWER,))
    results = compute_rewards([episode({}), episode({10.0: ANSWER}), with_context],
                              [[ref(10, 20)]] * 3, judge)
    assert len(judge.batches) == 1
    assert [r.reward_repetition for r in results] == [0.0, 0.0, -1.0]  # duplicate of the context


def test_code_default_preset_weights():
    judge = ScriptedJudge(scores={(ANSWER, ANSWER): 5})
    r = one({10.0: ANSWER, 14.0: ANSWER}, judge, cfg=REWARD_PRESETS["code_defaults"])
    assert r.total == pytest.approx(3 * 1.0 + 3 * -0.5)  # weights 3, 3, 2, 0 -> 1.5


def test_zero_weight_terms_ask_the_judge_nothing():
    judge = ScriptedJudge()
    cfg = RewardConfig(w_pauc=0, w_repetition=0)
    r = one({10.0: ANSWER, 14.0: "Something else."}, judge, cfg=cfg)
    assert judge.batches == [([], [])]
    assert r.total == 0.0


def test_offline_judge_runs_the_whole_path():
    r = one({10.0: ANSWER, 12.0: "a red cup"}, OfflineJudge())
    # reference content tokens: red, cup, next, laptop. Reply 1 = reference: F1 1 -> raw 5 -> y 4 at x 0.
    # Reply 2 {red, cup}: P 1, R 0.5, F1 2/3 -> 1 + round(2/3 * 4) = 4 -> y 3 at x = 2 * 0.5 = 1.
    # area 4 * 1 + 3 * 9 = 31; / 40 = 0.775
    assert r.reward_pauc == pytest.approx(0.775)
    assert r.reward_repetition == pytest.approx(-0.5)  # "red", "cup" were all said before


def test_no_window_at_all_rewards_silence_and_penalises_every_reply():
    # The synthetic GRPO task's known best policy: with no reference window every turn is
    # out of span, so all NO REPLY earns 0 and a reply at each of the 16 turns earns -1 * 0.5.
    texts = {float(t): f"Reply number {t}." for t in range(0, 31, 2)}
    judge = ScriptedJudge(repetition={x: False for x in texts.values()})
    silent, chatty = compute_rewards([episode({}), episode(texts)], [[], []], judge)
    assert (silent.reward_outspan, silent.reward_pauc, silent.total) == (0.0, 0.0, 0.0)
    assert chatty.reward_outspan == -1.0
    assert chatty.n_windows == 0
    assert chatty.total == pytest.approx(0.5 * -1.0)
