"""Every reason the build can record is declared final or retryable by the code that emits it,
and a retryable one is redone: a video that answers 429 in run 1 is fetched in run 2.

The scan reads the source of `curation/`, `flows/` and the manifest rules in `schemas/`: every call that hands a reason on (to a
function, class or dataclass with a `reason` parameter or field, or to `Quarantine`) is an
emission site; each string it can pass must be declared. A reason that is neither a string nor
passed on from a parameter or an object's `.reason` must be listed in `FORWARDED`, so a new way
of making reasons fails here until someone looks at it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from curation.corpus.catalogue import entry_of
from curation.corpus.results import VideoResult
from curation.corpus.reuse import redo_reason, row_inputs
from curation.manifest import ManifestRow
from curation.skips import declare_reasons, is_retryable, verdict_of
from curation.video.acquire import AcquireConfig, AcquiredVideo, acquire_video
from flows.video_pipeline import VideoRun, _Stopped
from tests.conftest import ROOT, SAMPLES
from tests.flaky_http import FlakyFileServer

# schemas/manifest.py refuses manifest rows for the build (its reasons are declared in curation.manifest,
# schemas may not import curation); the rest of schemas emits no quarantine row.
SCANNED = ("schemas/manifest.py", "curation", "flows")
READERS = {"is_retryable", "verdict_of", "_limits_of"}  # take a reason to classify it, emit none
# Whose `reason` is counted, never a quarantine row: a video's text route (asr, captions), and
# curation.speech.route's helper that builds a route to captions.
NOT_QUARANTINE = {"TextRoute", "_captions"}
# Reviewed expressions that pass on a reason some emitter already declared.
FORWARDED = {
    # descriptions: every scene's caption failed for the one same cause, reported as that cause
    ("curation/text/descriptions.py", "next(iter(counts))"),
}


def _modules() -> dict[str, ast.Module]:
    paths = [p for part in SCANNED for p in ([ROOT / part] if part.endswith(".py") else (ROOT / part).rglob("*.py"))]
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8")) for p in paths}


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _reason_positions(trees: dict[str, ast.Module]) -> dict[str, int]:
    """Callable name -> position of its `reason` argument (self not counted)."""
    found: dict[str, int] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name not in READERS and not node.name.startswith("__"):
                names = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
                if "reason" in names:
                    found[node.name] = names.index("reason")
            elif isinstance(node, ast.ClassDef):
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                if init is not None:
                    names = [a.arg for a in init.args.args if a.arg != "self"]
                else:  # a dataclass: its annotated fields, in order
                    names = [n.target.id for n in node.body if isinstance(n, ast.AnnAssign)
                             and isinstance(n.target, ast.Name)]
                if "reason" in names:
                    found[node.name] = names.index("reason")
    return found


def _returned_literals(trees: dict[str, ast.Module], name: str) -> set[str] | None:
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return {lit for ret in ast.walk(node) if isinstance(ret, ast.Return) and ret.value is not None
                        for lit in _literals(ret.value, node, trees, set())}
    return None


def _literals(expr: ast.expr, scope: ast.FunctionDef | None, trees, unknown: set[str]) -> set[str]:
    """The strings `expr` can be; what it cannot tell goes into `unknown` as source text."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _literals(expr.body, scope, trees, unknown) | _literals(expr.orelse, scope, trees, unknown)
    if isinstance(expr, ast.Attribute) and expr.attr == "reason":
        return set()  # an object's reason passed on: declared where that object was made
    if isinstance(expr, ast.Name) and scope is not None:
        params = {a.arg for a in scope.args.args + scope.args.kwonlyargs}
        if expr.id in params:
            return set()  # a parameter passed on: its callers are emission sites themselves
        values = [n.value for n in ast.walk(scope) if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)]
        if values:
            return {lit for value in values for lit in _literals(value, scope, trees, unknown)}
    if isinstance(expr, ast.Call) and (_callee(expr) or "").endswith("_reason"):
        returned = _returned_literals(trees, _callee(expr))
        if returned is not None:
            return returned
    unknown.add(ast.unparse(expr))
    return set()


def emitted_reasons(trees: dict[str, ast.Module]) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """Reason -> files that emit it; and the (file, expression) pairs the scan cannot resolve."""
    positions = _reason_positions(trees)
    emitted: dict[str, set[str]] = {}
    unresolved: set[tuple[str, str]] = set()
    for path, tree in trees.items():
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _callee(node) or ""
            if callee in NOT_QUARANTINE or (callee not in positions and callee != "Quarantine"):
                continue
            arg = next((k.value for k in node.keywords if k.arg == "reason"), None)
            position = positions.get(callee)
            if arg is None and position is not None and position < len(node.args):
                arg = node.args[position]
            if arg is None:
                continue
            scope = min((f for f in scopes if f.lineno <= node.lineno <= f.end_lineno),
                        key=lambda f: f.end_lineno - f.lineno, default=None)
            unknown: set[str] = set()
            for reason in _literals(arg, scope, trees, unknown):
                emitted.setdefault(reason, set()).add(path)
            unresolved |= {(path, text) for text in unknown}
    return emitted, unresolved


@pytest.fixture(scope="module")
def declared_everywhere():
    """Import every scanned module, so every declaration has run."""
    for path in _modules():
        importlib.import_module(path.removesuffix(".py").removesuffix("/__init__").replace("/", "."))


def test_every_emitted_reason_is_declared_final_or_retryable(declared_everywhere):
    emitted, unresolved = emitted_reasons(_modules())
    assert not (unresolved - FORWARDED), f"reasons the scan cannot read: {sorted(unresolved - FORWARDED)}"
    undeclared = {reason: sorted(paths) for reason, paths in emitted.items() if verdict_of(reason) is None}
    assert not undeclared, f"declare these with curation.skips.declare_reasons where they are emitted: {undeclared}"
    # The scan sees what matters: the reasons the old hand-kept list got wrong, from their emitters.
    for reason, emitter in (("connection_reset", "curation/video/http_fetch.py"),
                            ("http_retry", "curation/video/http_fetch.py"),
                            ("http_range", "curation/video/http_fetch.py"),
                            ("fetch_failed", "curation/video/acquire.py"),
                            ("text_unreadable", "curation/text/source_text.py")):
        assert emitter in emitted[reason] and is_retryable(reason), reason
    assert "connection_error" not in emitted


def test_the_scan_catches_an_undeclared_reason_and_an_unreadable_one():
    planted = ast.parse('def f(x):\n    return Skip("s", "made_up_reason"), Skip("s", x.upper())\n')
    emitted, unresolved = emitted_reasons(_modules() | {"curation/planted.py": planted})
    assert "curation/planted.py" in emitted["made_up_reason"] and verdict_of("made_up_reason") is None
    assert ("curation/planted.py", "x.upper()") in unresolved


def test_a_reason_declared_both_ways_is_refused():
    declare_reasons(final=("test_only_reason",))
    declare_reasons(final=("test_only_reason",))  # the same verdict twice is fine
    with pytest.raises(ValueError, match="both final and retryable"):
        declare_reasons(retryable=("test_only_reason",))
    assert is_retryable("never_declared_anywhere")  # unknown: redone, never trusted


@pytest.mark.parametrize("status", ["http_429", "http_408"])
def test_a_video_that_answers_429_in_run_1_is_fetched_in_run_2(tmp_path, status):
    served = tmp_path / "served"
    served.mkdir()
    (served / "clip.mp4").write_bytes((SAMPLES / "videos" / "bikes.mp4").read_bytes())
    cfg = AcquireConfig(retries=0, timeout_s=5)
    with FlakyFileServer(served, rate=1.0, failures=1, faults=(status,)) as server:
        row = ManifestRow(video_id="clip", uri=f"{server.url}/clip.mp4")
        with pytest.raises(_Stopped) as run1:  # what the pipeline records for the video
            VideoRun("clip").stage("acquire", acquire_video, row, tmp_path / "videos", cfg)
        result = VideoResult(video_id="clip", config_fingerprint="fp", inputs=row_inputs(row),
                             quarantine=[run1.value.row])
        assert run1.value.row.reason == "http_retry"
        assert redo_reason(entry_of(result, "0" * 64), row, "fp", tmp_path) == "retry"
        run2 = acquire_video(row, tmp_path / "videos", cfg)
    assert isinstance(run2, AcquiredVideo) and Path(run2.path).read_bytes() == (served / "clip.mp4").read_bytes()
    assert server.tries["clip.mp4"] == 2
