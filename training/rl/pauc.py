"""The one step-area PAUC function, shared by the RL reward and the benchmark scorer.

A window's judged replies become points (x, y): x is the reply's offset into the window, shrunk
by the floor time weight w (x = (t - s) * (1 - w)), y its judge score. The curve starts at
`start_score` from x = 0, jumps to each point's y at its x, and holds the last y up to the
window's end; its area is divided by window length * max_y. With w = 0.5 a correct reply at the
very end of its window still earns half of the time credit; w = 0 makes timeliness count fully,
w = 1 ignores it.

Departure from the published code: it divides by zero on a zero-length window; here such a
window raises (the schema already rejects it), as do points outside the window.
"""

from __future__ import annotations

from collections.abc import Sequence

# ProactiveVideoQA / MMDuet2 reward: the curve starts at 0.5 before the first judged reply.
DEFAULT_START_SCORE = 0.5
# MMDuet2 reward "floor time weight" and the benchmark's default omega.
DEFAULT_FLOOR_TIME_WEIGHT = 0.5


def step_area(
    points: Sequence[tuple[float, float]],
    window_s: float,
    max_y: float,
    start_score: float = DEFAULT_START_SCORE,
) -> float:
    """Normalised area under the step curve through `points` (sorted by x, 0 <= x <= window_s)."""
    if not window_s > 0:
        raise ValueError(f"window length must be positive, got {window_s!r} s")
    if not max_y > 0:
        raise ValueError(f"max_y must be positive, got {max_y!r}")
    area, prev_x, prev_y = 0.0, 0.0, float(start_score)
    for x, y in points:
        if x < prev_x - 1e-9:
            raise ValueError(f"points are not sorted by x or start before 0: {list(points)!r}")
        if x > window_s + 1e-9:
            raise ValueError(f"point x = {x:g} lies past the window's end ({window_s:g} s)")
        area += (x - prev_x) * prev_y
        prev_x, prev_y = x, float(y)
    # The final point at x = window length holds the last y (or the start score if none).
    area += (window_s - prev_x) * prev_y
    return area / (window_s * max_y)


def window_pauc(
    timed_scores: Sequence[tuple[float, float]],
    span_s: tuple[float, float],
    max_y: float,
    start_score: float = DEFAULT_START_SCORE,
    floor_time_weight: float = DEFAULT_FLOOR_TIME_WEIGHT,
) -> float:
    """PAUC of one window from (reply time in seconds, score) pairs.

    Times must lie inside `span_s`; the caller decides which replies belong to the window.
    Pairs are taken in time order (stable, so equal times keep the caller's order).
    """
    start_s, end_s = span_s
    if not 0.0 <= floor_time_weight <= 1.0:
        raise ValueError(f"floor time weight must lie in [0, 1], got {floor_time_weight!r}")
    points = []
    for time_s, score in sorted(timed_scores, key=lambda p: p[0]):
        if not start_s - 1e-9 <= time_s <= end_s + 1e-9:
            raise ValueError(f"reply at {time_s:g} s lies outside the window [{start_s:g}, {end_s:g}]")
        points.append((max(0.0, time_s - start_s) * (1.0 - floor_time_weight), score))
    return step_area(points, end_s - start_s, max_y, start_score)
