"""The trainer's data summary: what the episode rule made of a split's dialogues.

Counts the turns, the `NO REPLY` share of targets at this run's frame interval, and every reference
answer that did not simply take its own turn (moved, merged, superseded, dropped, late; see
`training.data.episodes.place_answers`). Built from the timeline alone: no frame is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import Dialogue
from training.data.episodes import Episode, EpisodeConfig, build_episode


def episode_summary(dialogues: list[Dialogue], config: EpisodeConfig, frame_timeline,
                    released: Sequence[Episode] = ()) -> dict:
    """Totals over the corpus dialogues' episodes and `released` ones (read from a released file,
    already built: `sft data=`), whose answers are their reply turns (the file lists no others)."""
    totals = {"episodes": 0, "turns": 0, "reply_turns": 0, "answers": 0, "answers_moved": 0,
              "answers_merged": 0, "answers_superseded": 0, "answers_dropped": 0, "answers_late": 0}
    built = [(build_episode(d, "", config, frame_timeline), len(d.references)) for d in dialogues]
    for episode, answers in built + [(e, sum(not t.is_silent for t in e.turns)) for e in released]:
        totals["episodes"] += 1
        totals["turns"] += len(episode.turns)
        totals["reply_turns"] += sum(not t.is_silent for t in episode.turns)
        totals["answers"] += answers
        totals["answers_moved"] += episode.moved_answers
        totals["answers_merged"] += episode.merged_answers
        totals["answers_superseded"] += episode.superseded_answers
        totals["answers_dropped"] += episode.dropped_answers
        totals["answers_late"] += episode.late_answers
    share = 1.0 - totals["reply_turns"] / totals["turns"] if totals["turns"] else 0.0
    return {"seconds_per_frame": config.seconds_per_frame, "frame_cap": config.frame_cap, **totals,
            "no_reply_share": round(share, 4)}
