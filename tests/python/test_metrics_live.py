"""/metrics of a live `peng serve` after real traffic: the vLLM-equivalent metric set with the
`peng:` prefix (REFERENCE.md §5), sane values, counters that only go up, histograms that are
consistent, Prometheus's own checker (`promtool check metrics`) on the live text, and a real
Prometheus server scraping Peng and answering a query about it.

promtool 2.42's linter always reports two things about this output that are deliberate:
  * "metric names should not contain ':'" (the `peng:` prefix, like vLLM's `vllm:`), and
  * `peng:iteration_tokens_total non-counter metrics should not have "_total" suffix` (a
    histogram keeping vLLM's name).
Anything else, and any parse error, fails; with `peng:` spelled `peng_`, only the second remains.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "SmolLM2-135M-Instruct"

GAUGES = ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"]
COUNTERS = ["prefix_cache_queries_total", "prefix_cache_hits_total", "num_preemptions_total",
            "prompt_tokens_total", "generation_tokens_total", "request_success_total",
            "http_requests_total", "grpc_requests_total"]
HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds",
              "e2e_request_latency_seconds", "request_queue_time_seconds",
              "request_prefill_time_seconds", "request_decode_time_seconds",
              "request_prompt_tokens", "request_generation_tokens", "iteration_tokens_total",
              "http_request_duration_seconds", "grpc_request_duration_seconds", "engine_step_seconds"]

COLON_LINT = "metric names should not contain ':'"
TOTAL_LINT = 'non-counter metrics should not have "_total" suffix'


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK)
                                  else None)
    if path is None:
        _missing(f"{name} not installed (Debian package prometheus; scripts/setup.sh)")
    return path


def traffic(url: str, grpc_target: str) -> None:
    """A little of everything: chat and completions, streamed and not, one stop, one abort-free
    error, one prefix-cache hit (the same long prompt twice), and a gRPC health check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(grpc_target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    with httpx.Client(base_url=url, timeout=60) as c:
        long_prompt = "The history of the printing press begins " * 8
        for _ in range(2):
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": long_prompt,
                                                "max_tokens": 4, "temperature": 0})
            assert r.status_code == 200, r.text
        r = c.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi!"}],
            "max_tokens": 6, "stream": True})
        assert r.status_code == 200
        r = c.post("/v1/completions", json={"prompt": "x", "temperature": -1})
        assert r.status_code == 400


def scrape_text(url: str) -> str:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert "version=0.0.4" in r.headers["content-type"], r.headers
    return r.text


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        assert key not in out, f"duplicate sample {key}"
        out[key] = float(value)
    return out


def types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in out, f"two TYPE lines for {name}"
            out[name] = kind
    return out


@pytest.fixture(scope="module")
def live(peng_server):
    traffic(peng_server.http_url, peng_server.grpc_target)
    return scrape_text(peng_server.http_url)


# ---------------------------------------------------------------------------------------------

def test_every_metric_is_present_with_its_type(live):
    t = types(live)
    for name in GAUGES:
        assert t.get(f"peng:{name}") == "gauge", name
    for name in COUNTERS:
        assert t.get(f"peng:{name}") == "counter", name
    for name in HISTOGRAMS:
        assert t.get(f"peng:{name}") == "histogram", name
    assert all(name.startswith("peng:") for name in t), sorted(t)
    s = samples(live)
    for name in GAUGES:
        assert f"peng:{name}" in s
    for name in HISTOGRAMS:
        assert any(k.startswith(f"peng:{name}_bucket") for k in s), name
        assert any(k.startswith(f"peng:{name}_count") for k in s), name
        assert any(k.startswith(f"peng:{name}_sum") for k in s), name
    for reason in ("stop", "length", "abort"):
        assert f'peng:request_success_total{{finished_reason="{reason}"}}' in s, reason
    assert 'peng:http_requests_total{route="/v1/completions",status="200"}' in s
    assert 'peng:http_requests_total{route="/v1/completions",status="400"}' in s
    assert 'peng:grpc_requests_total{method="/grpc.health.v1.Health/Check",code="OK"}' in s


def test_values_are_sane(live):
    s = samples(live)
    assert 0.0 <= s["peng:kv_cache_usage_perc"] <= 1.0
    assert s["peng:num_requests_running"] >= 0 and s["peng:num_requests_waiting"] >= 0
    assert s["peng:generation_tokens_total"] >= 4 + 4 + 1
    assert s["peng:prompt_tokens_total"] > 0
    assert s["peng:prefix_cache_hits_total"] <= s["peng:prefix_cache_queries_total"]
    assert s["peng:prefix_cache_hits_total"] > 0, "the repeated long prompt should hit"
    assert s["peng:time_to_first_token_seconds_count"] >= 3
    assert s["peng:e2e_request_latency_seconds_count"] >= 3
    assert s["peng:request_generation_tokens_sum"] <= s["peng:generation_tokens_total"]
    # Every step that computed tokens is timed once in each phase (a scrape may fall between
    # the step's two records).
    forward = s['peng:engine_step_seconds_count{phase="forward"}']
    assert abs(forward - s['peng:engine_step_seconds_count{phase="host"}']) <= 1
    assert forward >= 9 and abs(forward - s["peng:iteration_tokens_total_count"]) <= 1
    assert s['peng:engine_step_seconds_sum{phase="forward"}'] > 0


def test_histograms_are_consistent(live):
    s = samples(live)
    # Group buckets by (metric, labels without le).
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, value in s.items():
        if "_bucket{" not in key:
            continue
        name, labels = key.split("{", 1)
        labels = labels.rstrip("}")
        parts = [p for p in labels.split(",") if p]
        le = [p for p in parts if p.startswith("le=")]
        assert len(le) == 1, key
        rest = ",".join(p for p in parts if not p.startswith("le="))
        bound = le[0][4:-1]
        buckets.setdefault((name[:-len("_bucket")], rest), []).append(
            (float("inf") if bound == "+Inf" else float(bound), value))
    assert buckets
    for (name, rest), bs in buckets.items():
        bs.sort()
        assert bs[-1][0] == float("inf"), name
        counts = [v for _, v in bs]
        assert counts == sorted(counts), f"{name}{{{rest}}} buckets are not cumulative"
        count_key = f"{name}_count{{{rest}}}" if rest else f"{name}_count"
        assert s[count_key] == counts[-1], name


def test_prometheus_client_parses_it(live):
    families = {f.name: f for f in text_string_to_metric_families(live)}
    # prometheus_client drops the _total suffix of counter family names.
    assert "peng:generation_tokens" in families
    assert families["peng:generation_tokens"].type == "counter"
    assert families["peng:time_to_first_token_seconds"].type == "histogram"
    assert families["peng:kv_cache_usage_perc"].type == "gauge"


def test_counters_are_monotonic(peng_server):
    url = peng_server.http_url
    first = samples(scrape_text(url))
    traffic(url, peng_server.grpc_target)
    second = samples(scrape_text(url))
    t = types(scrape_text(url))
    checked = 0
    for key, v1 in first.items():
        name = key.split("{", 1)[0]
        base = name
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and types_has(t, name[:-len(suffix)], "histogram"):
                base = name[:-len(suffix)]
        kind = t.get(base)
        if kind not in ("counter", "histogram"):
            continue
        assert key in second, f"{key} disappeared"
        assert second[key] >= v1, f"{key} went down: {v1} -> {second[key]}"
        checked += 1
    assert checked > 50
    assert second["peng:generation_tokens_total"] > first["peng:generation_tokens_total"]
    assert second["peng:e2e_request_latency_seconds_count"] >= (
        first["peng:e2e_request_latency_seconds_count"] + 3)


def types_has(t: dict[str, str], name: str, kind: str) -> bool:
    return t.get(name) == kind


# ---------------------------------------------------------------------------------------------
# promtool

def promtool_check(text: str) -> tuple[int, list[str]]:
    p = subprocess.run([_tool("promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    lines = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    return p.returncode, lines


def test_promtool_accepts_live_output(live):
    code, lines = promtool_check(live)
    assert code in (0, 3), lines  # 1 = could not parse; 3 = lint complaints only
    assert not any("error while linting" in l or "parse" in l.lower() for l in lines), lines
    others = [l for l in lines
              if not ((l.startswith("peng:") and l.endswith(COLON_LINT))
                      or l == f"peng:iteration_tokens_total {TOTAL_LINT}")]
    assert others == [], others
    # The colon note appears exactly once per metric family, nothing else is wrong with names.
    assert sum(l.endswith(COLON_LINT) for l in lines) == len(types(live))


def test_promtool_without_colons_only_notes_the_histogram_name(live):
    code, lines = promtool_check(live.replace("peng:", "peng_"))
    assert code in (0, 3), lines
    assert lines == [f"peng_iteration_tokens_total {TOTAL_LINT}"], lines


# ---------------------------------------------------------------------------------------------
# A real Prometheus server scraping Peng

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_scrapes_peng(peng_server, tmp_path):
    prometheus = _tool("prometheus")
    traffic(peng_server.http_url, peng_server.grpc_target)
    target = peng_server.http_url.removeprefix("http://")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: peng\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        deadline = time.monotonic() + 45
        found = None
        last = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n" + \
                Path(log_path).read_text()[-3000:]
            try:
                r = httpx.get(api, params={"query": "peng:generation_tokens_total"}, timeout=2)
                last = r.text
                if r.status_code == 200:
                    result = r.json()["data"]["result"]
                    if result:
                        found = result
                        break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert found, f"Prometheus never returned peng:generation_tokens_total; last: {last}\n" + \
            Path(log_path).read_text()[-3000:]
        assert found[0]["metric"]["job"] == "peng"
        assert found[0]["metric"]["instance"] == target
        assert float(found[0]["value"][1]) > 0
        # The target is healthy, and a labelled series and a gauge come back too.
        up = httpx.get(api, params={"query": 'up{job="peng"}'}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1", up
        r = httpx.get(api, params={"query": 'peng:request_success_total{finished_reason="length"}'},
                      timeout=5).json()
        assert r["status"] == "success" and float(r["data"]["result"][0]["value"][1]) > 0, r
        r = httpx.get(api, params={"query": "peng:kv_cache_usage_perc"}, timeout=5).json()
        assert 0.0 <= float(r["data"]["result"][0]["value"][1]) <= 1.0, r
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
