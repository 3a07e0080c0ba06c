"""One build's output, released as one swap: the shards of its items, then index.json,
summary.json, the card and its figures together (`curation.corpus.release` says how a kill at any
point leaves a loadable corpus).

`checkpoint` is called between buckets and before the release; it may raise to stop the build
(a stop request): then the corpus stays as it was and what was written goes with the next release.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.corpus.card import write_dataset_card
from curation.corpus.catalogue import Catalogue
from curation.corpus.release import INDEX_NAME, Release, unlisted_shards
from curation.corpus.shards import ShardConfig, ShardUpdate, index_text, write_shards


def release_build(results_dir: str | Path, corpus_root: str | Path, cfg: ShardConfig, catalogue: Catalogue,
                  summary: dict[str, Any], llm_backend: str, checkpoint: Callable[[], None] = lambda: None,
                  on_shards: Callable[[ShardUpdate], None] = lambda update: None) -> dict[str, Any]:
    """Write and release the corpus of `catalogue`'s results; returns `summary` with this run's
    shard counts (`shards_this_run`), as written to summary.json and the card."""
    root = Path(corpus_root)
    shards = write_shards(results_dir, root, cfg, catalogue, on_bucket=lambda bucket, count: checkpoint())
    on_shards(shards)
    stale = unlisted_shards(root, {entry["path"] for entry in shards.index["shards"]})
    data = summary | {"shards_this_run": {"written": shards.written, "kept": shards.kept, "removed": len(stale)}}
    release = Release(root)
    try:
        release.write(INDEX_NAME, index_text(shards.index))
        release.write("summary.json", json.dumps(data, indent=2, default=str))
        checkpoint()
        write_dataset_card(root, shards.index, data, llm_backend=llm_backend, into=release.staging)
        checkpoint()  # the last point where a stop leaves the old corpus: after it, the release lands
    except BaseException:
        release.abandon()
        raise
    release.commit()
    return data
