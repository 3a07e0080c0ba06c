"""The LLM judge against a real loopback HTTP server speaking the chat-completions API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas import ReferenceAnswer
from training.rl.judge import (
    SCORE_PARSERS,
    JudgeConfig,
    LLMJudge,
    OfflineJudge,
    RepetitionItem,
    ScoreItem,
    parse_score,
    parse_yes_no,
)
from training.rl.reward import compute_rewards

GOOD, FAILS, CHATTY, REPEATS = "A red cup.", "The server breaks on this one.", "Rambling.", "Again a red cup."


def answer_for(user: str) -> tuple[int, str]:
    """(HTTP status, content) the fake endpoint gives for a user message."""
    if f"Predicted Answer: {FAILS}" in user:
        return 500, ""
    if f"Predicted Answer: {CHATTY}" in user:
        return 200, "I would say it deserves a four."
    if f"Predicted Answer: {GOOD}" in user:
        return 200, "<think></think>\n5"
    if f"New Turn: {REPEATS}" in user:
        return 200, "Yes"
    if "New Turn:" in user:
        return 200, "no"
    return 200, "2"


class ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        status, content = answer_for(body["messages"][-1]["content"])
        payload = {"error": {"message": "boom"}} if status != 200 else {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def make_judge(server) -> LLMJudge:
    cfg = JudgeConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="Qwen/Qwen3-32B")
    return LLMJudge.from_config(cfg, **FAST_CLIENT)


# Keep the client's retries short: a 500 must end as a failure within the test's patience.
FAST_CLIENT: dict = {"max_retries": 1}


def test_llm_judge_scores_and_drops_failed_calls(endpoint):
    judge = make_judge(endpoint)
    items = [ScoreItem("Q?", "A red cup.", GOOD), ScoreItem("Q?", "A red cup.", FAILS),
             ScoreItem("Q?", "A red cup.", CHATTY), ScoreItem("Q?", "A red cup.", "Other.", scale=3)]
    reps = [RepetitionItem(("A red cup.",), REPEATS), RepetitionItem(("A red cup.",), "A blue mug.")]
    scores, verdicts = judge.judge_batch(items, reps)
    assert scores == [5, None, None, 2]
    assert verdicts == [True, False]
    # by the predicted answer: GOOD is every item's reference too, and requests arrive in any order
    first = next(r for r in endpoint.requests if f"Predicted Answer: {GOOD}\n" in r["messages"][-1]["content"])
    assert first["model"] == "Qwen/Qwen3-32B"
    assert first["messages"][-1]["content"].endswith("/no_think")
    assert "5: fully covered" in first["messages"][0]["content"]
    three = next(r for r in endpoint.requests if "Other." in r["messages"][-1]["content"])
    assert "3: mostly covered" in three["messages"][0]["content"]


def test_reward_through_the_llm_judge_drops_the_failed_call(endpoint):
    judge = make_judge(endpoint)
    ref = ReferenceAnswer(question_id="v-q0", question="What is on the table?", answer="A red cup.",
                          reply_span=(10.0, 20.0))
    turns = [(10.0, FAILS), (14.0, GOOD)]
    [r] = compute_rewards([turns], [[ref]], judge)
    # only ((14 - 10) * 0.5 = 2, 5 - 1 = 4): 0.5 * 2 + 4 * 8 = 33; / 40 = 0.825
    assert r.reward_pauc == pytest.approx(0.825)
    # repetition of GOOD against FAILS: "no" -> 0; first reply has nothing earlier
    assert r.reward_repetition == 0.0
    assert r.n_judge_failures == 1


@pytest.mark.parametrize(("text", "scale", "expected"), [
    # bare digits
    ("4", 5, 4), (" 3.\n", 3, 3), ("Score: 2", 5, 2), ("<think>hmm</think>1", 5, 1), ("**3**", 3, 3),
    # a digit with words: read as the benchmark reads it, the first character
    ("2 (partially covered)", 3, 2), ("3 - mostly covered", 3, 3), ("4 because", 5, 4),
    ("1. Incorrect: the reply names the wrong person.", 3, 1), ('"2" partially', 3, 2),
    # a digit in a sentence
    ("The score is 2.", 3, 2), ("I would rate it 3 out of 3.", 3, 3), ("Rating: partially covered, 2/3", 3, 2),
    ("<think>the reply misses the door, maybe 1 or 2</think>The predicted answer deserves a 2.", 3, 2),
    # failed judgements
    ("4", 3, None), ("0", 5, None), ("four", 5, None), ("", 5, None), ("10", 5, None),
    ("Between 1 and 2.", 3, None), ("It scores 2.5", 3, None),
])
def test_lenient_parse_score(text, scale, expected):
    assert parse_score(text, scale, "lenient") == expected


# Replies that separate the published parsers, each reading worked by hand (scale 3 = the
# benchmark's rubric unless said; after removing a thinking block and outer whitespace):
SEPARATING = [
    # first-char: "S" is no digit -> None. last-number: numbers 2, 3 -> the last, 3.
    # lenient: "Score:" then the digit 2 -> 2.
    ("Score: 2 (out of 3)", 3, {"first-char": None, "last-number": 3, "lenient": 2}),
    # a bare digit reads alike everywhere
    ("3", 3, {"first-char": 3, "last-number": 3, "lenient": 3}),
    # scale 5 (the RL reward's): first-char "I" -> None; last-number 4, 5 -> 5;
    # lenient: "/5" dropped, the one lone digit left is 4
    ("I'd give 4/5", 5, {"first-char": None, "last-number": 5, "lenient": 4}),
    # first-char "1" -> 1; last-number 10 > 3 -> None; lenient: a two-digit number is no digit -> None
    ("10", 3, {"first-char": 1, "last-number": None, "lenient": None}),
    # first-char "T" -> None; last-number 1; lenient: the one lone digit, 1
    ("The answer is wrong. 1", 3, {"first-char": None, "last-number": 1, "lenient": 1}),
    # first-char "2"; last-number 2, 3 -> 3; lenient: the reply opens with 2 -> 2
    ("2. Partly; 3 would need the door.", 3, {"first-char": 2, "last-number": 3, "lenient": 2}),
    # the thinking block goes first, under every parser: "<think>1 or 2?</think>\n3" reads as "3"
    ("<think>1 or 2?</think>\n3", 3, {"first-char": 3, "last-number": 3, "lenient": 3}),
]


@pytest.mark.parametrize(("text", "scale", "expected"), SEPARATING)
def test_published_parsers_read_the_separating_replies_as_worked_by_hand(text, scale, expected):
    assert {name: parse_score(text, scale, name) for name in SCORE_PARSERS} == expected


def test_the_benchmarks_first_character_is_the_default_reading_of_score_and_the_reward_keeps_lenient():
    assert parse_score("Score: 2 (out of 3)", 3) is None  # "S": the benchmark's scorer reads no digit
    assert JudgeConfig().parse == "lenient"


@pytest.mark.parametrize(("text", "expected"), [
    ("yes", True), ("Yes.", True), ('"No"', False), ("no, it adds", False), ("maybe", None), ("", None),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_offline_judge_maps_overlap_onto_the_scale():
    judge = OfflineJudge()
    ref = "A man in a dark suit walks past the cars."
    scores = judge.score_replies([ScoreItem("Q", ref, ref), ScoreItem("Q", ref, "Bananas."),
                                  ScoreItem("Q", ref, ref, scale=3)])
    assert scores == [5, 1, 3]
    assert judge.is_repetition([RepetitionItem((), "Anything."), RepetitionItem(("A dark suit.",), "a suit")]) == [
        False, True]
