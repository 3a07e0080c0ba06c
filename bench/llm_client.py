"""Throughput of `LLMClient` against a loopback chat-completions server with a fixed latency.

A server that answers every request after L seconds, with C requests allowed in flight, can at
best serve C/L requests per second; the ratio achieved/(C/L) says how much the client itself
costs (goal >= 0.9). The baseline, measured in the same run, is a sequential client (one request
in flight) against the same server: the speed-up is what bounded concurrency buys. The server runs
in its own process (`python -m tests.openai_stub`) so that it does not share the client's GIL;
`cpu ms/req` is the client process's CPU time per request (the openai SDK + httpx dominate it).
A second baseline, `raw`, is C bare keep-alive connections sending the same bodies: what this
machine and this stub can do at all, so a low ratio on a loaded machine can be told apart from a
slow client (`vs raw`).

    python -m bench.llm_client [--latency-s 0.2] [--concurrency 16 64] [--rounds 6]
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

from curation.llm.client import LLMClient, LLMConfig, LLMRequest, LLMResponse
from schemas.cli import ArgumentParser
from schemas.llm_output import json_schema


@contextmanager
def stub_process(latency_s: float):
    proc = subprocess.Popen([sys.executable, "-m", "tests.openai_stub", "--latency-s", str(latency_s)],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _requests(n: int, prefix: str) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"{prefix} {i}"}], schema_name="judge_score")
            for i in range(n)]


def measure_rps(url: str, in_flight: int, n: int, prefix: str) -> tuple[float, float]:
    """Requests per second over `n` distinct requests (connections warmed up first), and the
    client's CPU milliseconds per request."""
    cfg = LLMConfig(base_url=url, model="stub-model", max_in_flight=in_flight, max_retries=0)
    with LLMClient(cfg) as client:
        client.complete_many(_requests(in_flight, f"warm {prefix}"))
        t0, cpu0 = time.perf_counter(), _cpu_s()
        outs = client.complete_many(_requests(n, prefix))
        elapsed_s, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    bad = [o for o in outs if not isinstance(o, LLMResponse)]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} requests failed, e.g. {bad[0]}")
    return n / elapsed_s, 1000 * cpu_s / n


def measure_raw_rps(url: str, in_flight: int, n: int) -> tuple[float, int]:
    """The same requests from C bare keep-alive connections (asyncio streams, hand-written
    HTTP/1.1): the ceiling this machine and this stub allow, with next to no client cost; and how
    many of the `n` came back 200 with a chat completion (the client's all must, or it raises)."""
    answered = [0]
    parsed = urlsplit(url)
    fmt = {"type": "json_schema", "json_schema": {"name": "judge_score", "schema": json_schema("judge_score"),
                                                  "strict": True}}

    async def worker(jobs: list[int]) -> None:
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        for i in jobs:
            body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": f"raw {i}"}],
                               "temperature": 0.7, "max_tokens": 2048, "response_format": fmt}).encode()
            writer.write(f"POST {parsed.path}/chat/completions HTTP/1.1\r\nhost: {parsed.netloc}\r\n"
                         f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            reply = json.loads(await reader.readexactly(length))
            answered[0] += i >= 0 and head.split(b" ", 2)[1] == b"200" and bool(reply.get("choices"))
        writer.close()

    async def run() -> float:
        await asyncio.gather(*(worker([-1]) for _ in range(in_flight)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(list(range(w, n, in_flight))) for w in range(in_flight)))
        return n / (time.perf_counter() - t0)

    return asyncio.run(run()), answered[0]


def main() -> None:
    ap = ArgumentParser(prog="python -m bench.llm_client", description=__doc__.splitlines()[0])
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--rounds", type=int, default=6, help="requests per run = rounds * concurrency")
    ap.add_argument("--sequential-n", type=int, default=10)
    args = ap.parse_args()

    with stub_process(args.latency_s) as url:
        seq_rps, _ = measure_rps(url, 1, args.sequential_n, "seq")
        rows = [(c, args.rounds * c, *measure_rps(url, c, args.rounds * c, f"c{c}"), c / args.latency_s,
                 measure_raw_rps(url, c, args.rounds * c)) for c in args.concurrency]

    print(f"loopback stub, fixed latency L = {args.latency_s:g} s; sequential client: {seq_rps:.2f} req/s "
          f"(ideal {1 / args.latency_s:.2f})")
    print(f"{'C':>4} {'N':>5} {'req/s':>8} {'C/L':>7} {'ratio':>6} {'vs seq':>7} {'raw':>7} {'vs raw':>6}"
          f" {'raw answered':>12} {'cpu ms/req':>10}")
    for c, n, rps, cpu_ms, ideal, (raw, answered) in rows:
        print(f"{c:>4} {n:>5} {rps:>8.1f} {ideal:>7.1f} {rps / ideal:>6.3f} {rps / seq_rps:>6.1f}x {raw:>7.1f}"
              f" {rps / raw:>6.3f} {f'{answered}/{n}':>12} {cpu_ms:>10.2f}")
    print("every client request answered with a chat completion (the run stops otherwise); C/L is the "
          "stub's bound, computed from its latency, not measured")


if __name__ == "__main__":
    main()
