"""Scale-out is config: the same flow with `task_runner: dask` on an existing Dask cluster."""

import pytest

from tests.conftest import build_sample_corpus
from tests.generated_corpus import table_rows

pytestmark = pytest.mark.slow


def _dialogues(corpus):
    # created_at is when the model answered (its cache entry's time): it differs between builds.
    return table_rows(corpus, "dialogues", drop=("provenance.created_at",))


def test_dask_local_cluster_builds_the_same_rows(sample_corpus, tmp_path):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("prefect_dask")

    class Finished(distributed.diagnostics.plugin.SchedulerPlugin):
        """Records every task that finished on a worker."""

        def __init__(self):
            self.finished = []

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory":
                self.finished.append(key)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        recorder = Finished()
        cluster.scheduler.add_plugin(recorder)
        out = tmp_path / "corpus"
        proc = build_sample_corpus(out, "--set", "task_runner=dask", "--set",
                                   f"dask_address={cluster.scheduler_address}", "--set", "batch_size=2")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        # The batches really ran on the cluster: 4 good rows in batches of 2.
        assert len(recorder.finished) >= 2, recorder.finished
    assert _dialogues(out) == _dialogues(sample_corpus)
