"""Release a corpus and SIGKILL it after its N-th file operation, for tests/test_release.py.

    python -m tests.release_child snapshots RESULTS CORPUS OUT BUCKETS
    python -m tests.release_child kill RESULTS TEMPLATE OUT BUCKETS {release|commit} N...

The file operations counted are os.replace, os.rename, os.unlink and os.rmdir: every rename and
delete of a release, its shard and staged-file writes included (each ends in a rename).

`snapshots` releases RESULTS into CORPUS (a folder named `corpus`, with BUCKETS hash buckets) to the end and copies the
corpus after every operation into OUT/after-<n>; prints {"operations": n, "commit_at": the
operation that wrote .release/COMMIT}. `kill` runs, for each N, a forked process (imports done
once, here) on a fresh copy OUT/kill-<N>/corpus of TEMPLATE that SIGKILLs itself right after its N-th
operation: `release` runs the whole release, `commit` only the commit of what TEMPLATE has staged
(the swap itself, step by step); prints each N's wait status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

from curation.corpus.build_release import release_build
from curation.corpus.catalogue import sync_catalogue
from curation.corpus.release import COMMIT, STAGING, commit_staged
from curation.corpus.shards import ShardConfig

OPERATIONS = ("replace", "rename", "unlink", "rmdir")


def count_operations(after_each) -> None:
    count = [0]
    for name in OPERATIONS:
        real = getattr(os, name)

        def operation(*args, _real=real, **kwargs):
            out = _real(*args, **kwargs)
            count[0] += 1
            after_each(count[0])
            return out

        setattr(os, name, operation)


def release(results: Path, corpus: Path, buckets: int) -> None:
    cfg = ShardConfig(buckets=buckets, validation_share=0.3, rl_share=0.2)
    release_build(results, corpus, cfg, sync_catalogue(results), {"videos": "-"}, "replay")


def snapshots(results: Path, corpus: Path, out: Path, buckets: int) -> dict:
    commit_at = []

    def after_each(n: int) -> None:
        if not commit_at and (corpus / STAGING / COMMIT).exists():
            commit_at.append(n)
        shutil.copytree(corpus, out / f"after-{n}", symlinks=True)

    count_operations(after_each)
    release(results, corpus, buckets)
    return {"operations": max(int(p.name.split("-")[1]) for p in out.glob("after-*")), "commit_at": commit_at[0]}


def kills(results: Path, template: Path, out: Path, buckets: int, mode: str, steps: list[int]) -> dict:
    statuses = {}
    for step in steps:
        corpus = out / f"kill-{step}" / "corpus"  # the card names its folder: the same as in the snapshots
        shutil.copytree(template, corpus, symlinks=True)
        pid = os.fork()
        if pid == 0:
            count_operations(lambda n, step=step: n == step and os.kill(os.getpid(), signal.SIGKILL))
            release(results, corpus, buckets) if mode == "release" else commit_staged(corpus)
            os._exit(0)
        statuses[step] = os.waitpid(pid, 0)[1]
    return {"statuses": statuses}


def main() -> int:
    mode, results, corpus, out, buckets = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), \
        int(sys.argv[5])
    if mode == "snapshots":
        print(json.dumps(snapshots(results, corpus, out, buckets)))
    else:
        print(json.dumps(kills(results, corpus, out, buckets, sys.argv[6], [int(n) for n in sys.argv[7:]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
