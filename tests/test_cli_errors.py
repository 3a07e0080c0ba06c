"""Usage mistakes end every command with one `error:` line on stderr and exit code 2, before
anything slow starts; `--debug` (or PROACTIVE_VIDEO_DEBUG=1) adds the traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from schemas.cli import DEBUG_ENV
from tests.conftest import ROOT, SAMPLES, dialogue_row


def one_error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_config_typo_is_one_line_before_prefect_starts():
    proc = subprocess.run([sys.executable, "-m", "flows.build_corpus", "--config", str(SAMPLES / "sample.yaml"),
                           "--set", "batch_sise=2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)  # so no "Starting temporary server" either
    assert "batch_sise: unknown key (did you mean batch_size?)" in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["--config", "/no/such/config.yaml"], "config file /no/such/config.yaml not found"),
    (["--config", str(SAMPLES / "sample.yaml"), "--set", "manifest=/no/such/manifest.jsonl"],
     "manifest /no/such/manifest.jsonl not found"),
    (["--config", str(SAMPLES / "sample.yaml"), "--set", "workers.cpux=2"], "did you mean cpu?"),
    (["--config", str(SAMPLES / "sample.yaml"), "--set", "limit"], "override limit is not KEY=VALUE"),
])
def test_build_corpus_usage_mistakes(argv, expected, capsys):
    from flows.build_corpus import main

    assert main(argv) == 2
    assert expected in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("argv", "expected"), [
    (["sft", "--preset", "tiny", "corpus=/no/such/dir"], "no corpus index (build the corpus first"),
    (["sft", "--preset", "tiny", "max_step=2"], "max_step: unknown key (did you mean max_steps?)"),
    (["grpo", "--config", "/no/such/grpo.yaml"], "config file /no/such/grpo.yaml not found"),
    (["sft", "max_steps"], "override 'max_steps' is not key=value"),
    (["prepare", "corpus=/no/such/dir"], "no corpus index (build the corpus first"),
    (["prepare", "max_pixel=3136"], "max_pixel: unknown key (did you mean max_pixels?)"),
    (["score", "--predictions", "/no/p.jsonl", "--references", "/no/r.jsonl"], "no such file: /no/p.jsonl"),
])
def test_training_usage_mistakes(argv, expected, capsys):
    from training.run import main

    assert main(argv) == 2
    assert expected in one_error_line(capsys.readouterr().err)


def test_a_commands_check_runs_once_and_main_gets_what_it_returned(monkeypatch):
    """`check` reads the config, the corpus index, the model's place (eval: every gold record) before
    the heavy imports; the command gets its result instead of checking and reading all again."""
    import types

    from training import run

    calls = []
    command = types.ModuleType("tests_fake_command")
    command.add_arguments = lambda parser: parser.add_argument("--x")
    command.check = lambda args: calls.append("check") or {"x": args.x}
    command.main = lambda args, checked: calls.append(checked) or 0
    monkeypatch.setitem(sys.modules, command.__name__, command)
    monkeypatch.setitem(run.COMMANDS, "fake", (command.__name__, command.__name__, "a fake command"))
    assert run.main(["fake", "--x", "1"]) == 0
    assert calls == ["check", {"x": "1"}]


def test_debug_flag_and_variable_add_the_traceback(capsys, monkeypatch):
    from training.run import main

    assert main(["sft", "--debug", "max_step=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert main(["sft", "max_step=2"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_push_to_hub_without_a_corpus(tmp_path, capsys):
    from flows.push_to_hub import main

    assert main(["--corpus", str(tmp_path / "nothing"), "--repo-id", "user/name", "--dry-run"]) == 2
    assert "no index.json" in one_error_line(capsys.readouterr().err)


def test_push_to_hub_on_a_corpus_a_build_holds_is_one_line(tmp_path, capsys):
    from flows.push_to_hub import main

    (tmp_path / "index.json").write_text('{"shards": []}')
    holder = subprocess.Popen([sys.executable, "-c", "import time; from curation.corpus.build_lock import corpus_lock\n"
                               f"with corpus_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--corpus", str(tmp_path), "--repo-id", "user/name", "--dry-run"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"is being built by another run (pid {holder.pid} " in one_error_line(capsys.readouterr().err)


def test_a_deployed_push_is_refused_while_a_build_holds_the_corpus(tmp_path):
    """A deployment runs the flow itself, not the command line: the flow holds the corpus lock."""
    from curation.corpus.build_lock import CorpusBusy
    from flows.push_to_hub import push_to_hub

    (tmp_path / "index.json").write_text('{"shards": []}')
    holder = subprocess.Popen([sys.executable, "-c", "import time; from curation.corpus.build_lock import corpus_lock\n"
                               f"with corpus_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CorpusBusy, match=f"pid {holder.pid} "):
            push_to_hub.fn(corpus=str(tmp_path), repo_id="user/name", dry_run=True)
    finally:
        holder.kill()
        holder.wait()


def test_schemas_validate_takes_a_folder_and_names_a_missing_path(tmp_path, capsys):
    from schemas.__main__ import main

    folder = tmp_path / "records" / "dialogues"
    folder.mkdir(parents=True)
    (folder / "part-0.jsonl").write_text(json.dumps(dialogue_row()) + "\n")
    assert main(["validate", str(tmp_path / "records")]) == 0
    assert "1 records checked, 1 valid" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in one_error_line(capsys.readouterr().err)
    assert main(["validate", str(tmp_path)]) == 0  # a folder above: found recursively


def test_a_bug_keeps_its_traceback():
    from schemas.cli import run_cli

    def broken(argv):
        raise KeyError("not a usage mistake")

    with pytest.raises(KeyError):
        run_cli(broken, [])
