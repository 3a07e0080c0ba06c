"""The LLM client against a real loopback HTTP server speaking the chat-completions API."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from curation.llm.cache import ResponseCache, write_replay
from curation.llm.client import (
    LLMClient,
    LLMConfig,
    LLMFailure,
    LLMRequest,
    LLMResponse,
    extract_json_object,
)
from schemas.llm_output import json_schema
from tests.openai_stub import Reply, StubServer

SCORE = {"score": 4}
SINGLE = {"question": "Who rides the bike?", "answers": [{"segment_ids": ["v-s0001"], "answer": "A man."}]}
PLANTED = "sk-PLANTED-never-print-me-4242"


def ask(text: str = "Rate this.", schema: str | None = "judge_score", **kw) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], schema_name=schema, **kw)


def client_for(stub: StubServer, **kw) -> LLMClient:
    base = {"base_url": stub.url, "model": "stub-model", "backoff_s": 0.01, "timeout_s": 10.0}
    return LLMClient(LLMConfig(**{**base, **kw}))


@pytest.fixture
def stub():
    with StubServer(Reply.json(SCORE)) as server:
        yield server


@pytest.mark.parametrize("mode,expected", [("json_schema", "json_schema"), ("json_object", "json_object"),
                                           ("none", None)])
def test_response_format_follows_the_structured_output_setting(stub, mode, expected):
    with client_for(stub, structured_output=mode) as client:
        out = client.complete(ask())
    assert isinstance(out, LLMResponse) and out.data == SCORE
    sent = stub.requests[0].get("response_format")
    assert (sent or {}).get("type") == expected
    if expected == "json_schema":
        assert sent["json_schema"] == {"name": "judge_score", "schema": json_schema("judge_score"), "strict": True}


def test_no_response_format_without_a_schema(stub):
    with client_for(stub) as client:
        out = client.complete(ask(schema=None))
    assert out.data is None and out.text == json.dumps(SCORE)
    assert "response_format" not in stub.requests[0]


def test_a_server_that_rejects_response_format_is_asked_in_plain_text_from_then_on():
    def script(body):
        if "response_format" in body:
            return Reply.error(400, "response_format is not supported")
        return Reply.text("Here you go:\n```json\n" + json.dumps(SINGLE) + "\n```")

    with StubServer(script) as stub, client_for(stub) as client:
        first = client.complete(ask("a", schema="single_question"))
        second = client.complete(ask("b", schema="single_question"))
    assert first.data == second.data == {**SINGLE}
    assert ["response_format" in body for body in stub.requests] == [True, False, False]


@pytest.mark.parametrize("text", [
    "```json\n" + json.dumps(SINGLE) + "\n```",
    "Sure! Here is the JSON you asked for:\n" + json.dumps(SINGLE) + "\nHope it helps {:",
    "```\n" + json.dumps(SINGLE, indent=2) + "\n```\n",
])
def test_fenced_or_wrapped_json_is_parsed_and_validated(text):
    with StubServer(Reply.text(text)) as stub, client_for(stub, structured_output="none") as client:
        out = client.complete(ask(schema="single_question"))
    assert isinstance(out, LLMResponse) and out.data == SINGLE and out.text == text


@pytest.mark.parametrize("text,why", [
    ("I cannot answer that.", "no JSON object"),
    ('{"question": "Who rides the bike?", "answers": [{"segment_ids": ["v-s0', "truncated"),
    ('{"question": "Who?", "answers": []}', "answers"),
    ('{"question": "Who?", "answers": [{"segment_ids": ["a"], "answer": "b"}], "extra": 1}', "extra"),
    ("{'question': 'single quotes'}", "not valid JSON"),
])
def test_invalid_json_is_a_failure_that_keeps_the_text(text, why):
    with StubServer(Reply.text(text)) as stub, client_for(stub) as client:
        out = client.complete(ask(schema="single_question"))
        usage = client.usage_snapshot()
    assert isinstance(out, LLMFailure) and out.reason == "llm_invalid_json"
    assert why in out.detail and out.text == text
    assert out.to_skip("dialogue").reason == "llm_invalid_json"
    assert usage["failures"] == 1 and usage["retries"] == 0 and len(stub.requests) == 1


def test_a_reply_cut_at_max_tokens_says_so():
    with StubServer(Reply.text('{"score": ', finish_reason="length")) as stub, client_for(stub) as client:
        out = client.complete(ask())
    assert out.reason == "llm_invalid_json" and "max_tokens" in out.detail


@pytest.mark.parametrize("content", ["", None, "  \n"])
def test_empty_content_is_llm_empty(content):
    with StubServer(Reply.text(content)) as stub, client_for(stub) as client:
        out = client.complete(ask())
    assert isinstance(out, LLMFailure) and out.reason == "llm_empty"


def test_429_and_500_are_retried_then_succeed():
    script = [Reply.error(429, retry_after_s=0.01), Reply.error(500), Reply.error(503), Reply.json(SCORE)]
    with StubServer(script) as stub, client_for(stub, max_retries=4) as client:
        out = client.complete(ask())
        usage = client.usage_snapshot()
    assert isinstance(out, LLMResponse) and out.data == SCORE
    assert len(stub.requests) == 4
    assert usage["calls"] == 1 and usage["retries"] == 3 and usage["failures"] == 0


def test_retries_exhausted_is_llm_failed():
    with StubServer(Reply.error(429, "slow down")) as stub, client_for(stub, max_retries=2) as client:
        out = client.complete(ask())
        usage = client.usage_snapshot()
    assert isinstance(out, LLMFailure) and out.reason == "llm_failed"
    assert "3 attempts" in out.detail and "429" in out.detail
    assert len(stub.requests) == 3 and usage["retries"] == 2 and usage["failures"] == 1


def test_a_dropped_connection_is_retried():
    with StubServer([Reply(drop=True), Reply.json(SCORE)]) as stub, client_for(stub) as client:
        out = client.complete(ask())
    assert out.data == SCORE and len(stub.requests) == 2


def test_other_4xx_is_rejected_without_retry():
    with StubServer(Reply.error(422, "bad messages")) as stub, client_for(stub) as client:
        out = client.complete(ask(schema=None))
    assert out.reason == "llm_rejected" and "422" in out.detail and len(stub.requests) == 1


def test_a_slow_answer_times_out_per_request_and_is_retried():
    script = [Reply.json(SCORE, delay_s=3.0), Reply.json(SCORE, delay_s=3.0), Reply.json({"score": 2})]
    with StubServer(script) as stub, client_for(stub, timeout_s=0.6, max_retries=2) as client:
        out = client.complete(ask())
    assert out.data == {"score": 2} and len(stub.requests) == 3
    with StubServer(Reply.json(SCORE, delay_s=3.0)) as stub, client_for(stub, timeout_s=0.6, max_retries=1) as client:
        out = client.complete(ask())
    assert out.reason == "llm_failed" and "timeout" in out.detail and len(stub.requests) == 2


def test_in_flight_requests_are_bounded_and_saturated():
    with StubServer(Reply.json(SCORE, delay_s=0.2)) as stub, client_for(stub, max_in_flight=4) as client:
        outs = client.complete_many([ask(f"q{i}") for i in range(24)])
    assert all(isinstance(o, LLMResponse) for o in outs)
    assert stub.max_in_flight_seen == 4


def test_complete_many_keeps_order_and_counts_usage():
    def script(body):
        n = int(body["messages"][0]["content"][1:])
        return Reply.json({"score": 1 + n % 5}, prompt_tokens=n, completion_tokens=2)

    with StubServer(script) as stub, client_for(stub, max_in_flight=3) as client:
        outs = client.complete_many([ask(f"q{i}") for i in range(10)])
        usage = client.usage_snapshot()
    assert [o.data["score"] for o in outs] == [1 + i % 5 for i in range(10)]
    assert usage == {"calls": 10, "cache_hits": 0, "failures": 0, "retries": 0,
                     "prompt_tokens": sum(range(10)), "completion_tokens": 20}
    assert len(stub.requests) == 10


def test_sync_calls_from_many_threads_and_an_outside_event_loop(stub):
    with client_for(stub, max_in_flight=2) as client:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda i: client.complete(ask(f"t{i}")), range(16)))
        outs.append(asyncio.run(client.acomplete(ask("from asyncio.run"))))
        assert client.usage_snapshot()["calls"] == 17
    assert all(o.data == SCORE for o in outs)
    assert stub.max_in_flight_seen <= 2
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.complete(ask())


def test_second_identical_run_is_served_from_the_cache(stub, tmp_path):
    reqs = [ask(f"q{i}", tag=f"t{i}") for i in range(5)]
    with client_for(stub, cache_dir=str(tmp_path)) as first:
        a = first.complete_many(reqs)
    with client_for(stub, cache_dir=str(tmp_path)) as second:
        b = second.complete_many(reqs)
        usage = second.usage_snapshot()
    assert len(stub.requests) == 5
    assert usage["calls"] == 0 and usage["cache_hits"] == 5
    assert [(r.key, r.text, r.data) for r in a] == [(r.key, r.text, r.data) for r in b]
    assert all(r.cached for r in b) and not any(r.cached for r in a)
    assert len(list(tmp_path.rglob("*.json"))) == 5 and not list(tmp_path.rglob("*.tmp"))


def test_failures_are_not_cached(tmp_path):
    with StubServer([Reply.text("no json"), Reply.json(SCORE)]) as stub:
        with client_for(stub, cache_dir=str(tmp_path)) as client:
            assert client.complete(ask()).reason == "llm_invalid_json"
            assert client.complete(ask()).data == SCORE
            assert client.complete(ask()).cached


def test_a_corrupt_cache_entry_is_a_miss(stub, tmp_path):
    with client_for(stub, cache_dir=str(tmp_path)) as client:
        key = client.complete(ask()).key
        ResponseCache(tmp_path).path_for(key).write_text('{"key": "' + key + '", "te')
        again = client.complete(ask())
    assert again.data == SCORE and not again.cached and len(stub.requests) == 2


def test_the_key_covers_model_prompt_version_and_resolved_parameters():
    base = ask()
    cfg = LLMConfig(model="m")
    key = base.key("m", cfg.temperature, cfg.max_tokens)
    assert key == ask(tag="a different label").key("m", cfg.temperature, cfg.max_tokens)
    assert key == ask(temperature=cfg.temperature).key("m", cfg.temperature, cfg.max_tokens)
    variants = [base.key("m2", cfg.temperature, cfg.max_tokens),
                ask(prompt_version="v2").key("m", cfg.temperature, cfg.max_tokens),
                ask(schema="scene_caption").key("m", cfg.temperature, cfg.max_tokens),
                base.key("m", 0.1, cfg.max_tokens), base.key("m", cfg.temperature, 9),
                ask("Rate that.").key("m", cfg.temperature, cfg.max_tokens)]
    assert len({key, *variants}) == 1 + len(variants)


def test_a_new_model_or_prompt_version_misses_the_cache(stub, tmp_path):
    with client_for(stub, cache_dir=str(tmp_path)) as client:
        client.complete(ask())
        client.complete(ask(prompt_version="v2"))
    with client_for(stub, cache_dir=str(tmp_path), model="other-model") as client:
        client.complete(ask())
    assert len(stub.requests) == 3
    assert stub.requests[-1]["model"] == "other-model"


def test_replay_hit_and_miss(tmp_path):
    cfg = LLMConfig(backend="replay", replay_path=str(tmp_path / "replay.jsonl"), model="sample-model")
    hit, miss = ask("known", tag="bikes/judge"), ask("unknown", tag="bikes/unknown")
    write_replay(cfg.replay_path, [{"key": hit.key(cfg.model, cfg.temperature, cfg.max_tokens),
                                    "tag": hit.tag, "text": json.dumps(SCORE)}])
    with LLMClient(cfg) as client:
        assert client.key_for(hit) == hit.key(cfg.model, cfg.temperature, cfg.max_tokens)
        a, b = client.complete_many([hit, miss])
        usage = client.usage_snapshot()
    assert isinstance(a, LLMResponse) and a.data == SCORE
    assert isinstance(b, LLMFailure) and b.reason == "replay_missing" and "bikes/unknown" in b.detail
    assert usage["calls"] == 2 and usage["failures"] == 1


def test_a_malformed_replay_file_names_the_line(tmp_path):
    path = tmp_path / "replay.jsonl"
    path.write_text('{"key": "a", "tag": "", "text": "{}"}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        LLMClient(LLMConfig(backend="replay", replay_path=str(path)))


def test_vllm_backend_without_the_extra_is_missing_extra():
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with LLMClient(LLMConfig(backend="vllm", model="tiny")) as client:
        out = client.complete(ask())
    assert out.reason == "missing_extra" and "pip install vllm" in out.detail


def test_the_api_key_never_leaks(caplog, monkeypatch):
    def echo_auth(body):  # a hostile server that echoes the Authorization header in its error
        return Reply.error(500, f"bad auth header: {stub.headers[-1].get('authorization')}")

    for name in ("", "openai", "httpx", "httpcore", "httpx2", "curation"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    with StubServer(echo_auth) as stub:
        cfg = LLMConfig(base_url=stub.url, api_key=PLANTED, max_retries=1, backoff_s=0.01)
        with LLMClient(cfg) as client:
            out = client.complete(ask())
            logging.getLogger("curation.llm.client").info("config in use: %r / %s", cfg, cfg)
    assert stub.headers[0]["authorization"] == f"Bearer {PLANTED}"  # the key is really used
    assert out.reason == "llm_failed" and "bad auth header" in out.detail
    exposed = [repr(cfg), str(cfg), cfg.model_dump_json(), json.dumps(cfg.model_dump(mode="json")),
               repr(out), out.detail, out.text, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert caplog.records and all(PLANTED not in s for s in exposed)

    monkeypatch.setenv("PROACTIVE_TEST_KEY", PLANTED)
    with StubServer(echo_auth) as stub:
        cfg = LLMConfig(base_url=stub.url, api_key_env="PROACTIVE_TEST_KEY", max_retries=0)
        with LLMClient(cfg) as client:
            out = client.complete(ask())
    assert stub.headers[0]["authorization"] == f"Bearer {PLANTED}"
    assert PLANTED not in out.detail and PLANTED not in cfg.model_dump_json() and PLANTED not in caplog.text


def test_the_api_key_is_not_in_cache_files(stub, tmp_path):
    with client_for(stub, api_key=PLANTED, cache_dir=str(tmp_path)) as client:
        assert client.complete(ask()).data == SCORE
    files = list(tmp_path.rglob("*"))
    assert files and all(PLANTED not in f.read_text() for f in files if f.is_file())


@pytest.mark.parametrize("text,expected", [
    ('{"a": "a } in a string", "b": {"c": 1}} trailing', {"a": "a } in a string", "b": {"c": 1}}),
    ('prefix {"a": "escaped \\" quote {"} suffix', {"a": 'escaped " quote {'}),
    ("```JSON\n{\"a\": 1}\n```", {"a": 1}),
])
def test_extract_json_object(text, expected):
    assert extract_json_object(text) == expected


def test_config_rejects_unknown_fields_and_replay_without_a_path():
    with pytest.raises(ValueError):
        LLMConfig(apikey="x")
    with pytest.raises(ValueError, match="replay_path"):
        LLMConfig(backend="replay")
    with pytest.raises(ValueError, match="unknown schema_name"):
        ask(schema="nope")


def test_close_cancels_work_in_flight_instead_of_hanging():
    import concurrent.futures
    import time

    with StubServer(Reply.json(SCORE, delay_s=5.0)) as stub:
        client = client_for(stub)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.complete, ask())
            while not stub.requests:
                time.sleep(0.01)
            client.close()
            with pytest.raises(concurrent.futures.CancelledError):
                pending.result(timeout=10)


def test_replay_keys_images_by_position_so_a_decoder_change_keeps_the_sample_working():
    from curation.llm.client import LLMRequest

    def caption(jpeg: str) -> LLMRequest:
        return LLMRequest(messages=[{"role": "user", "content": [
            {"type": "text", "text": "scene bikes#2, frames at 4.0 s"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"}}]}],
            schema_name="scene_caption")

    a, b = caption("AAAA"), caption("BBBB")
    assert a.key("m") != b.key("m")  # the cache still tells the frames apart
    assert a.key("m", images="position") == b.key("m", images="position")
    text_only = LLMRequest(messages=[{"role": "user", "content": "hi"}])
    assert text_only.key("m") == text_only.key("m", images="position")
