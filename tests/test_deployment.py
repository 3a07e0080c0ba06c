"""`prefect deployment run build-corpus/<name>` against a real local Prefect server."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT, SAMPLES, stop_process

pytestmark = pytest.mark.slow


def _wait_for_deployment(env, name: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited early with {server.returncode}")
        out = subprocess.run([sys.executable, "-m", "prefect", "deployment", "inspect", name],
                             env=env, capture_output=True, text=True, cwd=ROOT)
        if out.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"deployment {name} never registered")


def test_deployment_run_with_param_overrides(prefect_env, tmp_path):
    config = yaml.safe_load((SAMPLES / "sample.yaml").read_text())
    config["manifest"] = str(SAMPLES / "manifest.jsonl")
    config["llm"]["replay_path"] = str(SAMPLES / "replay.jsonl")
    config["output_dir"] = str(tmp_path / "default-out")
    config_path = tmp_path / "deploy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "flows.serve", "--name", "loopback", "--config",
                               str(config_path)], env=prefect_env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        _wait_for_deployment(prefect_env, "build-corpus/loopback", server)
        out_dir = tmp_path / "from-param"
        overrides = json.dumps({"output_dir": str(out_dir), "limit": 2})
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "build-corpus/loopback",
                              "--param", f"overrides={overrides}", "--watch", "--watch-timeout", "400"],
                             env=prefect_env, cwd=ROOT, capture_output=True, text=True, timeout=450)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
        summary = json.loads((out_dir / "summary.json").read_text())
        # The override reached the flow: only the first two manifest rows were processed.
        assert summary["new_this_run"] == 2
        assert (out_dir / "index.json").exists() and not (tmp_path / "default-out").exists()
    finally:
        stop_process(server)
        log.close()
