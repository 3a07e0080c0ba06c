"""The shared step-area PAUC function, checked against areas worked out by hand."""

import pytest

from training.rl.pauc import step_area, window_pauc


def test_no_point_keeps_the_start_score_over_the_whole_window():
    # area = 0.5 * 10 = 5; normalised by 10 * 4 -> 0.5 / 4
    assert step_area([], 10.0, max_y=4) == pytest.approx(0.5 / 4)
    # the benchmark's max_y = 2: 0.5 / 2 = 0.25
    assert step_area([], 7.0, max_y=2) == pytest.approx(0.25)


def test_steps_hold_each_y_until_the_next_point_and_the_last_to_the_end():
    # 0.5 on [0, 2) + 1 on [2, 6) + 3 on [6, 10] = 1 + 4 + 12 = 17; / (10 * 4)
    assert step_area([(2.0, 1), (6.0, 3)], 10.0, max_y=4) == pytest.approx(17 / 40)


def test_start_score_is_configurable():
    # 0 on [0, 5) + 4 on [5, 10] = 20; / 40
    assert step_area([(5.0, 4)], 10.0, max_y=4, start_score=0.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (0.5, (0.5 * 5 + 4 * 5) / 40),  # x = (20 - 10) * 0.5 = 5 -> 22.5 / 40 = 0.5625
        (0.0, (0.5 * 10) / 40),  # x = 10: the reply counts for nothing but its start score
        (1.0, (4 * 10) / 40),  # x = 0: timeliness ignored
    ],
)
def test_floor_time_weight_shrinks_the_reply_offset(weight, expected):
    # one perfect reply (y = 4) at the window's end, window [10, 20]
    assert window_pauc([(20.0, 4)], (10.0, 20.0), 4, floor_time_weight=weight) == pytest.approx(expected)


def test_perfect_reply_at_the_window_start_scores_one():
    assert window_pauc([(10.0, 4)], (10.0, 20.0), 4) == pytest.approx(1.0)


def test_omega_one_keeps_the_last_reply_in_time():
    # all x collapse to 0; the later reply (y = 1) must win: 1 * 10 / (10 * 2)
    assert window_pauc([(12.0, 2), (18.0, 1)], (10.0, 20.0), 2, floor_time_weight=1.0) == pytest.approx(0.5)


def test_pairs_are_taken_in_time_order():
    late_first = window_pauc([(18.0, 1), (12.0, 2)], (10.0, 20.0), 2)
    in_order = window_pauc([(12.0, 2), (18.0, 1)], (10.0, 20.0), 2)
    assert late_first == in_order


@pytest.mark.parametrize("window_s", [0.0, -1.0])
def test_zero_or_negative_window_is_rejected(window_s):
    # the public code divides by zero here
    with pytest.raises(ValueError, match="window length"):
        step_area([], window_s, max_y=4)


def test_points_outside_the_window_or_unsorted_are_rejected():
    with pytest.raises(ValueError, match="past the window"):
        step_area([(11.0, 1)], 10.0, max_y=4)
    with pytest.raises(ValueError, match="not sorted"):
        step_area([(5.0, 1), (2.0, 1)], 10.0, max_y=4)
    with pytest.raises(ValueError, match="outside the window"):
        window_pauc([(25.0, 4)], (10.0, 20.0), 4)
    with pytest.raises(ValueError, match="floor time weight"):
        window_pauc([], (10.0, 20.0), 4, floor_time_weight=1.5)
