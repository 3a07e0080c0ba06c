"""Scale-out is config: the same flow with `task_runner: dask` on an existing Dask cluster whose
workers are separate processes started in their own working folders, as on other machines."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, build_sample_corpus
from tests.generated_corpus import table_rows

pytestmark = pytest.mark.slow


def _dialogues(corpus):
    # created_at is when the model answered (its cache entry's time): it differs between builds.
    return table_rows(corpus, "dialogues", drop=("provenance.created_at",))


def _start_worker(address: str, folder) -> subprocess.Popen:
    folder.mkdir()
    # The code must be importable on a worker (installed, or on its path); its folder is its own.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
         "--name", folder.name, "--local-directory", str(folder / "dask-scratch")],
        cwd=folder, env=env, stdout=(folder.parent / f"{folder.name}.log").open("w"), stderr=subprocess.STDOUT)


def test_dask_workers_in_other_folders_build_the_same_rows(sample_corpus, tmp_path):
    import distributed  # the dev extra (make install): required, so a broken install fails, not skips
    import prefect_dask  # noqa: F401

    class Finished(distributed.diagnostics.plugin.SchedulerPlugin):
        """Records every task that finished on a worker."""

        def __init__(self):
            self.finished = []

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory":
                self.finished.append(key)

    folders = [tmp_path / "worker-a", tmp_path / "worker-b"]
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        recorder = Finished()
        cluster.scheduler.add_plugin(recorder)
        workers = [_start_worker(cluster.scheduler_address, folder) for folder in folders]
        try:
            with distributed.Client(cluster.scheduler_address) as client:
                client.wait_for_workers(2, timeout=120)
            out = tmp_path / "corpus"
            proc = build_sample_corpus(out, "--set", "task_runner=dask", "--set",
                                       f"dask_address={cluster.scheduler_address}", "--set", "batch_size=2")
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=60)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        # The batches really ran on the cluster: 5 good rows in batches of 2.
        assert len(recorder.finished) >= 2, recorder.finished
    assert _dialogues(out) == _dialogues(sample_corpus)
    # Every worker wrote into the flow's output_dir, none into its own folder.
    for folder in folders:
        assert {p.name for p in folder.iterdir()} <= {"dask-scratch"}, list(folder.rglob("*"))
    results = list((out / "work" / "results").rglob("*.json"))
    assert len(results) == 9
