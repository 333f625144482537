"""Smoke tests of tests/bench/serve_bench.py on synthetic timings and a mock SSE server: the
metric arithmetic (TTFT, TPOT, pooled ITL, E2EL, throughput, percentiles, goodput), token-count
fallbacks, arrival process, dataset sampling/filters, and stream parsing. No real server."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "bench"))
import serve_bench as sb  # noqa: E402
import run_serve_bench as rsb  # noqa: E402


class WordTokenizer(sb.Tokenizer):
    """One token per whitespace-separated word; ids are positions in a growing vocabulary."""

    def __init__(self):
        self.words = [f"w{i}" for i in range(50)]
        super().__init__(lambda s: [self._id(w) for w in s.split()],
                         lambda ids: " ".join(self.words[i] for i in ids), 50, {0, 1}, [0], "words")

    def _id(self, w):
        if w not in self.words:
            self.words.append(w)
        return self.words.index(w)


def out(ttft, latency, tokens, itl=None, prompt_len=10, usage_prompt=None, text="", chunks=0):
    o = sb.RequestOutput(success=True, ttft=ttft, latency=latency, output_tokens=tokens,
                         prompt_len=prompt_len, usage_prompt_tokens=usage_prompt,
                         generated_text=text, content_chunks=chunks)
    o.itl = list(itl or [])
    return o


def test_metrics_arithmetic():
    outputs = [
        out(0.1, 1.1, 11, itl=[0.1] * 10, prompt_len=100),            # TPOT (1.1-0.1)/10 = 100 ms
        out(0.3, 2.3, 5, itl=[0.5] * 4, prompt_len=50, usage_prompt=60),  # TPOT 2.0/4 = 500 ms
        out(0.2, 0.2, 1, prompt_len=7),                                # one token: no TPOT sample
        sb.RequestOutput(success=False, error="HTTP 503"),
    ]
    m, lens = sb.calculate_metrics(outputs, dur_s=2.0, selected_percentiles=(50, 90, 99))
    assert m["completed"] == 3 and m["failed"] == 1
    assert lens == [11, 5, 1, 0]
    assert m["total_output_tokens"] == 17
    assert m["total_input_tokens"] == 100 + 60 + 7      # usage's prompt_tokens wins
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["output_throughput"] == pytest.approx(8.5)
    assert m["total_token_throughput"] == pytest.approx((167 + 17) / 2)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["mean_tpot_ms"] == pytest.approx(300.0)     # over the two requests with > 1 token
    assert m["p99_tpot_ms"] == pytest.approx(np.percentile([100.0, 500.0], 99))
    assert m["mean_itl_ms"] == pytest.approx((10 * 100 + 4 * 500) / 14)   # pooled gaps
    assert m["median_itl_ms"] == pytest.approx(100.0)
    assert m["p90_e2el_ms"] == pytest.approx(np.percentile([1100, 2300, 200], 90))
    assert m["request_goodput"] is None
    assert m["output_token_source"] == "usage"


def test_goodput_counts_requests_meeting_every_slo():
    outputs = [out(0.1, 1.1, 11), out(0.3, 2.3, 5), out(0.2, 0.2, 1)]
    cfg = sb.parse_goodput(["ttft:250", "tpot:200"])
    assert cfg == {"ttft": 250.0, "tpot": 200.0}
    m, _ = sb.calculate_metrics(outputs, 2.0, goodput_config=cfg)
    # 1: ttft 100 tpot 100 ok; 2: ttft 300 fails; 3: ttft 200, tpot 0 (one token) ok.
    assert m["request_goodput"] == pytest.approx(1.0)
    m, _ = sb.calculate_metrics(outputs, 2.0, goodput_config={"e2el": 1000})
    assert m["request_goodput"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        sb.parse_goodput(["latency:5"])


def test_output_count_fallbacks():
    tok = WordTokenizer()
    o = out(0.1, 1.0, None, text="a b c d", chunks=3)
    assert sb.output_token_count(o, tok) == (4, "retokenized")
    assert sb.output_token_count(o, None) == (3, "chunks")
    m, _ = sb.calculate_metrics([o], 1.0, tok)
    assert m["output_token_source"] == "retokenized"
    assert m["mean_tpot_ms"] == pytest.approx(300.0)


def test_empty_run_reports_zeros():
    m, lens = sb.calculate_metrics([sb.RequestOutput(success=False)], 1.0)
    assert m["completed"] == 0 and lens == [0] and m["mean_ttft_ms"] == 0.0
    text = sb.format_report(m, {"max_concurrency": 4, "request_rate": float("inf")},
                            ["ttft", "tpot", "itl", "e2el"], [50.0, 99.0])
    assert "Successful requests:" in text and "P99 E2EL (ms):" in text


def test_report_lines():
    m, _ = sb.calculate_metrics([out(0.1, 1.1, 11, itl=[0.1] * 10)], 2.0, goodput_config={"ttft": 500})
    text = sb.format_report(m, {"max_concurrency": None, "request_rate": 2.0}, ["ttft", "tpot"], [90.0])
    for line in ("Request goodput (req/s):", "Output token throughput (tok/s):", "P90 TTFT (ms):",
                 "Mean TPOT (ms):"):
        assert line in text
    assert "ITL" not in text


def test_gamma_arrivals(monkeypatch):
    slept = []

    async def fake_sleep(s):
        slept.append(s)

    monkeypatch.setattr(sb.asyncio, "sleep", fake_sleep)

    async def collect(rate, burstiness):
        slept.clear()
        rng = np.random.default_rng(0)
        return [r async for r in sb.get_request(list(range(4000)), rate, burstiness, rng)], list(slept)

    reqs, gaps = asyncio.run(collect(4.0, 1.0))
    assert reqs == list(range(4000)) and len(gaps) == 4000
    assert np.mean(gaps) == pytest.approx(0.25, rel=0.05)
    assert np.std(gaps) == pytest.approx(0.25, rel=0.1)      # exponential: std = mean
    _, bursty = asyncio.run(collect(4.0, 0.25))
    assert np.mean(bursty) == pytest.approx(0.25, rel=0.1)
    assert np.std(bursty) == pytest.approx(0.5, rel=0.15)    # gamma: std = mean / sqrt(shape)
    _, none = asyncio.run(collect(float("inf"), 1.0))
    assert none == []


def sharegpt_entries(n):
    rng = np.random.default_rng(1)
    entries = []
    for i in range(n):
        p, c = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        entries.append({"id": str(i), "conversations": [
            {"from": "human", "value": " ".join(f"p{i}" for _ in range(p))},
            {"from": "gpt", "value": " ".join("x" for _ in range(c))}]})
    entries.append({"id": "short", "conversations": [{"from": "human", "value": "one turn"}]})
    return entries


def test_sharegpt_sampling_filters_and_is_seeded():
    tok = WordTokenizer()
    entries = sharegpt_entries(300)
    a = sb.sample_sharegpt(entries, 50, tok, seed=3, max_input_len=30, max_output_len=20, max_model_len=45)
    b = sb.sample_sharegpt(entries, 50, tok, seed=3, max_input_len=30, max_output_len=20, max_model_len=45)
    c = sb.sample_sharegpt(entries, 50, tok, seed=4, max_input_len=30, max_output_len=20, max_model_len=45)
    assert [r.prompt for r in a] == [r.prompt for r in b] != [r.prompt for r in c]
    for r in a:
        assert 4 <= r.prompt_len <= 30 and r.prompt_len == len(r.prompt.split())
        assert 4 <= r.expected_output_len <= 20
        assert r.prompt_len + r.expected_output_len <= 45
    fixed = sb.sample_sharegpt(entries, 10, tok, seed=3, fixed_output_len=2)
    assert all(r.expected_output_len == 2 for r in fixed)
    with pytest.raises(SystemExit):
        sb.sample_sharegpt(entries, 10_000, tok, seed=0)


def test_read_sharegpt_tolerates_truncation(tmp_path):
    entries = sharegpt_entries(5)
    text = json.dumps(entries, indent=2)
    whole = tmp_path / "whole.json"
    whole.write_text(text)
    assert sb.read_sharegpt(str(whole)) == entries
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('"id": "4"') + 20])   # inside entry 4
    assert sb.read_sharegpt(str(cut)) == entries[:4]


def test_random_dataset_lengths():
    tok = WordTokenizer()
    reqs = sb.sample_random(20, tok, seed=0, input_len=10, output_len=8, range_ratio=0.5)
    assert len(reqs) == 20
    assert all(5 <= r.prompt_len <= 15 and 4 <= r.expected_output_len <= 12 for r in reqs)
    assert all(r.prompt_len == len(r.prompt.split()) for r in reqs)
    again = sb.sample_random(20, tok, seed=0, input_len=10, output_len=8, range_ratio=0.5)
    assert [r.prompt for r in reqs] == [r.prompt for r in again]


def sse(*events):
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events).encode()


def run_mock(body_bytes, chat=False, status=200):
    """send_request against a loopback aiohttp server that answers `body_bytes` with `status`."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    async def handler(request):
        await request.read()
        return web.Response(status=status, body=body_bytes, content_type="text/event-stream")

    async def go():
        app = web.Application()
        app.router.add_post("/v1/completions", handler)
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            return await sb.send_request(session, str(server.make_url("/v1/completions")), {}, {}, 12, chat)

    return asyncio.run(go())


def test_stream_parsing_completions():
    o = run_mock(sse({"choices": [{"text": ""}]}, {"choices": [{"text": "Hel"}]},
                     {"choices": [{"text": "lo"}]}, {"choices": [{"text": "!", "finish_reason": "length"}]},
                     {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}, "[DONE]"))
    assert o.success and o.generated_text == "Hello!"
    assert o.output_tokens == 3 and o.usage_prompt_tokens == 12
    assert o.content_chunks == 3 and len(o.itl) == 2      # the empty chunk is not a token
    assert 0 < o.ttft <= o.latency


def test_stream_parsing_chat_and_errors():
    o = run_mock(sse({"choices": [{"delta": {"role": "assistant"}}]},
                     {"choices": [{"delta": {"content": "Hi"}}]}, "[DONE]"), chat=True)
    assert o.success and o.generated_text == "Hi" and o.output_tokens is None and o.itl == []
    o = run_mock(sse({"choices": [{"text": "a"}]}, {"error": {"message": "boom", "code": 500}}, "[DONE]"))
    assert not o.success and "boom" in o.error
    o = run_mock(b'{"error": {"message": "queue full"}}', status=429)
    assert not o.success and o.error.startswith("HTTP 429")
    o = run_mock(sse("[DONE]"))
    assert not o.success


def test_driver_points_and_disjoint_prompt_slices():
    points = rsb.load_points([1, 4, 16, 64], [0.5], min_prompts=32, prompts_per_concurrency=8,
                             max_prompts=128, rate_prompts=32)
    assert points == [("c", 1, 32), ("c", 4, 32), ("c", 16, 128), ("c", 64, 128), ("r", 0.5, 32)]
    runs, slices, total = rsb.plan_runs(points, rounds=3, num_warmups=2)
    assert len(runs) == len(slices) == 15
    assert [r for _, r in runs] == [0] * 5 + [1] * 5 + [2] * 5  # rounds outermost
    assert total == 3 * (352 + 5 * 2)
    used = set()
    for ((_, _, n), _), (w0, m0, m1) in zip(runs, slices):
        assert m0 - w0 == 2 and m1 - m0 == n
        run = set(range(w0, m1))
        assert not run & used, "a run reuses another run's prompts (prefix-cache replay)"
        used |= run
    assert used == set(range(total))
