"""The peng.v1.Inference gRPC API against a live `peng serve`, through grpcio stubs generated at
test time from proto/peng/v1/inference.proto (nothing generated is committed).

Needs the session fixture `peng_server` (tests/python/conftest.py: .http_url, .grpc_target and
optionally .api_key). Covers: streaming Generate, cancellation mid-stream (the engine's running
count drops back to 0), Tokenize/Detokenize round trip, ListModels, errors, the standard health
service and server reflection (what grpcurl uses).
"""
from __future__ import annotations

import collections
import importlib
import json
import os
import random
import re
import sys
import time
import urllib.request

import grpc
import pytest


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RPC_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """(inference_pb2, inference_pb2_grpc), generated into a temporary directory."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("grpc_stubs")
    args = [
        "grpc_tools.protoc",
        f"-I{os.path.join(REPO_ROOT, 'proto')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "peng/v1/inference.proto",
    ]
    assert protoc.main(args) == 0, "grpc_tools.protoc failed on proto/peng/v1/inference.proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("peng.v1.inference_pb2")
        pb2_grpc = importlib.import_module("peng.v1.inference_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


@pytest.fixture(scope="session")
def server(request):
    """The live server, or a skip while the `peng_server` fixture is missing or cannot start."""
    try:
        return request.getfixturevalue("peng_server")
    except pytest.FixtureLookupError:
        reason = "the peng_server fixture is not defined yet (tests/python/conftest.py)"
    except Exception as e:  # noqa: BLE001 - report any start-up failure as the skip reason
        reason = f"peng_server could not start: {e!r}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_target)
    try:
        grpc.channel_ready_future(ch).result(timeout=20)
    except grpc.FutureTimeoutError:
        pytest.fail(f"no gRPC server at {server.grpc_target} "
                    "(is the gRPC frontend wired into `peng serve`?)")
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def md(server):
    key = getattr(server, "api_key", None)
    return [("authorization", f"Bearer {key}")] if key else []


@pytest.fixture(scope="session")
def stub(pb, channel):
    return pb[1].InferenceStub(channel)


@pytest.fixture(scope="session")
def model(stub, pb, md):
    models = stub.ListModels(pb[0].ListModelsRequest(), metadata=md, timeout=RPC_TIMEOUT)
    assert len(models.models) == 1
    return models.models[0]


def _greedy(pb, text, max_tokens, **kw):
    req = pb[0].GenerateRequest(text=text, max_tokens=max_tokens, **kw)
    req.sampling.temperature = 0.0
    return req


def _wait_for(predicate, timeout=10.0, interval=0.05):
    """Polls a live process's state until predicate() holds; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def test_generate_streams_tokens_text_and_usage(stub, pb, md, model):
    pb2 = pb[0]
    prompt = "The capital of France is"
    req = _greedy(pb, prompt, 12, ignore_eos=True, request_id="pytest-stream")
    req.sampling.logprobs = 2
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    assert len(msgs) >= 2, "a 12-token completion should arrive as a stream, not one message"
    ids = [t for m in msgs for t in m.token_ids]
    text = "".join(m.text for m in msgs)
    for m in msgs[:-1]:
        assert m.finish_reason == pb2.FINISH_REASON_UNSPECIFIED
        assert not m.HasField("usage")
    last = msgs[-1]
    assert all(m.request_id.startswith("pytest-stream") for m in msgs)
    assert last.finish_reason == pb2.FINISH_REASON_LENGTH
    assert len(ids) == 12
    assert last.usage.completion_tokens == 12
    # One logprob entry per token, each with 2 alternatives; the sampled token is greedy, so it
    # is the most likely one.
    lps = [lp for m in msgs for lp in m.logprobs]
    assert [lp.token_id for lp in lps] == ids
    for lp in lps:
        assert len(lp.top_logprobs) == 2
        assert lp.top_logprobs[0].token_id == lp.token_id
        assert lp.logprob <= 0.0

    tok = stub.Tokenize(pb2.TokenizeRequest(text=prompt), metadata=md, timeout=RPC_TIMEOUT)
    assert last.usage.prompt_tokens == tok.count
    detok = stub.Detokenize(pb2.DetokenizeRequest(token_ids=ids, skip_special_tokens=True),
                            metadata=md, timeout=RPC_TIMEOUT)
    assert text == detok.text
    assert text.strip(), "greedy SmolLM2 output should not be empty"

    # Token-id prompts work too, and greedy decoding is deterministic.
    req2 = pb2.GenerateRequest(max_tokens=12, ignore_eos=True)
    req2.token_ids.ids.extend(tok.token_ids)
    req2.sampling.temperature = 0.0
    msgs2 = list(stub.Generate(req2, metadata=md, timeout=RPC_TIMEOUT))
    assert [t for m in msgs2 for t in m.token_ids] == ids


def test_prompt_logprobs_score_the_prompt_as_http_echo_does(server, stub, pb, md, model):
    """prompt_logprobs with max_tokens 0: one message with every prompt token's logprob after
    the first, the same as the HTTP completions echo + logprobs answer for the same text."""
    import httpx

    pb2 = pb[0]
    text = "The capital of France is Paris."
    req = pb2.GenerateRequest(text=text, max_tokens=0, prompt_logprobs=2)
    req.sampling.temperature = 0.0
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    assert len(msgs) == 1
    m = msgs[0]
    assert m.finish_reason == pb2.FINISH_REASON_LENGTH
    assert list(m.token_ids) == [] and m.usage.completion_tokens == 0
    tok = stub.Tokenize(pb2.TokenizeRequest(text=text), metadata=md, timeout=RPC_TIMEOUT)
    assert [lp.token_id for lp in m.prompt_logprobs] == list(tok.token_ids)[1:]
    for lp in m.prompt_logprobs:
        assert lp.logprob <= 0.0 and len(lp.top_logprobs) == 2

    headers = {"Authorization": f"Bearer {server.api_key}"} if getattr(server, "api_key", None) else {}
    r = httpx.post(server.http_url + "/v1/completions", headers=headers, timeout=RPC_TIMEOUT,
                   json={"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 2})
    assert r.status_code == 200, r.text
    http_lps = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert http_lps[0] is None
    assert [lp.logprob for lp in m.prompt_logprobs] == pytest.approx(http_lps[1:], abs=1e-6)

    # Out of range, and max_tokens 0 without prompt_logprobs, are INVALID_ARGUMENT.
    for bad in (pb2.GenerateRequest(text=text, max_tokens=1, prompt_logprobs=21),
                pb2.GenerateRequest(text=text, max_tokens=0)):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(bad, metadata=md, timeout=RPC_TIMEOUT))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _abort_count(server) -> float:
    """peng:request_success_total{finished_reason="abort"} from /metrics."""
    req = urllib.request.Request(server.http_url.rstrip("/") + "/metrics")
    key = getattr(server, "api_key", None)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as resp:
        text = resp.read().decode()
    m = re.search(r'^peng:request_success_total\{finished_reason="abort"\} (\S+)$', text, re.M)
    assert m, "peng:request_success_total{finished_reason=\"abort\"} missing from /metrics"
    return float(m.group(1))


def test_cancel_mid_stream_frees_the_engine(server, stub, pb, md, model):
    pb2 = pb[0]
    aborts_before = _abort_count(server)
    max_tokens = min(400, model.max_model_len - 16)
    call = stub.Generate(_greedy(pb, "Write a long story about a dragon.", max_tokens,
                                 ignore_eos=True), metadata=md, timeout=RPC_TIMEOUT)
    got = 0
    for m in call:
        got += len(m.token_ids)
        if got >= 2:
            break
    assert got >= 2
    load = stub.GetLoad(pb2.GetLoadRequest(), metadata=md, timeout=RPC_TIMEOUT)
    assert load.running + load.waiting >= 1
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.CANCELLED

    def idle():
        load = stub.GetLoad(pb2.GetLoadRequest(), metadata=md, timeout=RPC_TIMEOUT)
        return load if load.running == 0 and load.waiting == 0 else None

    load = _wait_for(idle, timeout=10.0)
    assert load is not None, "the cancelled request is still running 10 s after the cancel"
    assert 0.0 <= load.kv_usage <= 1.0
    # The engine counted it as an abort (it did not simply run to max_tokens).
    assert _wait_for(lambda: _abort_count(server) >= aborts_before + 1, timeout=10.0)


def test_tokenize_detokenize_round_trip(stub, pb, md):
    pb2 = pb[0]
    text = "Hello, world! Ünïcödé text, 你好, emoji 🐉 and  two  spaces."
    tok = stub.Tokenize(pb2.TokenizeRequest(text=text, add_special_tokens=False),
                        metadata=md, timeout=RPC_TIMEOUT)
    assert tok.count == len(tok.token_ids) > 5
    assert tok.max_model_len > 0
    detok = stub.Detokenize(pb2.DetokenizeRequest(token_ids=tok.token_ids), metadata=md,
                            timeout=RPC_TIMEOUT)
    assert detok.text == text

    with pytest.raises(grpc.RpcError) as err:
        stub.Detokenize(pb2.DetokenizeRequest(token_ids=[10**9]), metadata=md,
                        timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_ids" in err.value.details()


def test_list_models_matches_http(server, model):
    assert model.id
    assert model.max_model_len > 0
    assert model.vocab_size > 0
    req = urllib.request.Request(server.http_url.rstrip("/") + "/v1/models")
    key = getattr(server, "api_key", None)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as resp:
        body = json.load(resp)
    assert [m["id"] for m in body["data"]] == [model.id]


def test_errors_map_to_status_codes(stub, pb, md, model):
    pb2 = pb[0]
    cases = [
        (pb2.GenerateRequest(model="no-such-model", text="hi"), grpc.StatusCode.NOT_FOUND,
         "no-such-model"),
        (pb2.GenerateRequest(max_tokens=4), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        (pb2.GenerateRequest(text="hi", max_tokens=0), grpc.StatusCode.INVALID_ARGUMENT,
         "max_tokens"),
        (pb2.GenerateRequest(text="hi", max_tokens=model.max_model_len),
         grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ]
    bad_temp = pb2.GenerateRequest(text="hi", max_tokens=4)
    bad_temp.sampling.temperature = -1.0
    cases.append((bad_temp, grpc.StatusCode.INVALID_ARGUMENT, "sampling.temperature"))
    for req, code, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
        assert err.value.code() == code, (req, err.value.details())
        assert field in err.value.details()


def test_health_check_serving(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "peng.v1.Inference"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_and_describes_the_service(channel):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="peng.v1.Inference"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    ]
    listed, described, health = list(refl.ServerReflectionInfo(iter(requests), timeout=RPC_TIMEOUT))
    names = {s.name for s in listed.list_services_response.service}
    assert "peng.v1.Inference" in names
    assert "grpc.health.v1.Health" in names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    methods = {m.name for f in files if f.package == "peng.v1" for s in f.service
               for m in s.method}
    assert {"Generate", "Tokenize", "Detokenize", "ListModels", "GetLoad"} <= methods
    # The health service is described too (grpcurl can call it by reflection alone).
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in health.file_descriptor_response.file_descriptor_proto]
    assert {m.name for f in files if f.package == "grpc.health.v1" for s in f.service
            for m in s.method} == {"Check", "Watch"}, health


def test_generate_is_logged_with_its_request_id(stub, pb, md, server):
    list(stub.Generate(_greedy(pb, "Hi", 2, request_id="pytest-logged"), metadata=md, timeout=RPC_TIMEOUT))
    assert _wait_for(lambda: "request_id=pytest-logged" in server.log()), server.log()[-2000:]
    assert re.search(r"peng grpc: Generate OK [0-9.]+ s request_id=pytest-logged", server.log())


def test_drain_timeout_ends_a_call_it_never_ran_with_unavailable(pb, peng_bin, smollm2_path, tmp_path):
    """One running call and one queued behind it (max_num_seqs 1); the drain timeout aborts
    both. The running one ends OK with finish reason abort; the one that never ran ends
    UNAVAILABLE, which clients retry elsewhere (HTTP answers 503)."""
    import threading
    from conftest import start_peng_server, stop_peng_server
    pb2, pb2_grpc = pb
    server = start_peng_server(peng_bin, smollm2_path, tmp_path, "scheduler: {max_num_seqs: 1}\n",
                               "--drain-timeout-s", "1")
    results, started = {}, threading.Event()

    def call(name):
        msgs = []
        with grpc.insecure_channel(server.grpc_target) as ch:
            req = pb2.GenerateRequest(text="Once upon a time", max_tokens=2000, ignore_eos=True)
            try:
                for m in pb2_grpc.InferenceStub(ch).Generate(req, timeout=RPC_TIMEOUT):
                    started.set()
                    msgs.append(m)
                results[name] = (grpc.StatusCode.OK, msgs)
            except grpc.RpcError as e:
                results[name] = (e.code(), msgs)

    try:
        running = threading.Thread(target=call, args=("running",), daemon=True)
        running.start()
        assert started.wait(60)
        queued = threading.Thread(target=call, args=("queued",), daemon=True)
        queued.start()
        time.sleep(0.5)  # queued behind the running call
    finally:
        assert stop_peng_server(server) == 0, server.log()[-3000:]
    running.join(30)
    queued.join(30)
    code, msgs = results["running"]
    assert code == grpc.StatusCode.OK and msgs, results
    assert msgs[-1].finish_reason == pb2.FINISH_REASON_ABORT
    code, msgs = results["queued"]
    assert code == grpc.StatusCode.UNAVAILABLE, results
    assert not msgs


def test_drain_timeout_ends_every_stream_with_abort(pb, peng_bin, smollm2_path, tmp_path):
    """SIGTERM with a drain timeout shorter than the requests: every HTTP and gRPC stream still
    gets its final message (finish reason abort, usage), then the server exits 0."""
    import threading
    import httpx
    from conftest import start_peng_server, stop_peng_server
    pb2, pb2_grpc = pb
    server = start_peng_server(peng_bin, smollm2_path, tmp_path, "", "--drain-timeout-s", "1")
    http_results, grpc_results, started = [], [], threading.Semaphore(0)

    def http_stream():
        lines = []
        try:
            with httpx.stream("POST", server.http_url + "/v1/completions", timeout=RPC_TIMEOUT,
                              json={"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True,
                                    "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and not lines:
                        started.release()
                    lines.append(line)
        except Exception as e:  # noqa: BLE001 - reported by the assertions below
            lines.append(f"error: {e!r}")
            started.release()
        http_results.append(lines)

    def grpc_stream():
        msgs = []
        with grpc.insecure_channel(server.grpc_target) as ch:
            req = pb2.GenerateRequest(text="Once upon a time", max_tokens=2000, ignore_eos=True)
            try:
                for m in pb2_grpc.InferenceStub(ch).Generate(req, timeout=RPC_TIMEOUT):
                    if not msgs:
                        started.release()
                    msgs.append(m)
            except grpc.RpcError as e:
                msgs.append(e)
                started.release()
        grpc_results.append(msgs)

    threads = [threading.Thread(target=f, daemon=True) for f in [http_stream] * 6 + [grpc_stream] * 4]
    for t in threads:
        t.start()
    for _ in threads:
        assert started.acquire(timeout=60)
    assert stop_peng_server(server) == 0, server.log()[-3000:]
    for t in threads:
        t.join(30)
    for lines in http_results:
        data = [l[6:] for l in lines if l.startswith("data: ")]
        assert data and data[-1] == "[DONE]", lines[-3:]
        assert json.loads(data[-2])["choices"][0]["finish_reason"] == "abort", data[-2]
    for msgs in grpc_results:
        assert msgs and not isinstance(msgs[-1], grpc.RpcError), msgs[-1]
        assert msgs[-1].finish_reason == pb2.FINISH_REASON_ABORT
        assert msgs[-1].usage.completion_tokens > 0
    assert "drain timed out after 1 s: aborted 10 unfinished sequences" in server.log(), server.log()[-2000:]


def test_generate_json_object(stub, pb, md):
    # JSON mode over gRPC: the greedy output either closes one JSON object (then the end token)
    # or is cut by max_tokens.
    req = _greedy(pb, "JSON for a person named Ann, 30 years old:", 200, json_object=True)
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    text = "".join(m.text for m in msgs)
    assert msgs[-1].finish_reason == pb[0].FINISH_REASON_STOP, repr(text)
    assert isinstance(json.loads(text), dict), text


def test_generate_json_schema(stub, pb, md):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    req = _greedy(pb, "JSON for a person named Ann, 30 years old:", 100, json_schema=json.dumps(schema))
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    text = "".join(m.text for m in msgs)
    assert msgs[-1].finish_reason == pb[0].FINISH_REASON_STOP, repr(text)
    value = json.loads(text)
    assert list(value) == ["name", "age"] and isinstance(value["age"], int), text
    # A schema outside the subset is INVALID_ARGUMENT naming the keyword.
    bad = _greedy(pb, "x", 5, json_schema=json.dumps({"type": "object", "properties": {"n": {"not": {"const": 3}}}}))
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Generate(bad, metadata=md, timeout=RPC_TIMEOUT))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'not'" in e.value.details()


def test_generate_choices(stub, pb, md):
    req = _greedy(pb, "Is the sky blue? Answer:", 10, choices=[" yes", " no", " maybe"])
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    text = "".join(m.text for m in msgs)
    assert text in (" yes", " no", " maybe") and msgs[-1].finish_reason == pb[0].FINISH_REASON_STOP, repr(text)


def test_generate_regex(stub, pb, md):
    import re

    req = _greedy(pb, "The year the Berlin wall fell:", 12, regex=r" (19|20)\d\d\.?")
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    text = "".join(m.text for m in msgs)
    assert re.fullmatch(r" (19|20)\d\d\.?", text) and msgs[-1].finish_reason == pb[0].FINISH_REASON_STOP, repr(text)
    for bad, why in [(_greedy(pb, "x", 5, regex="a(?=b)"), "lookaround"),
                     (_greedy(pb, "x", 5, regex="a", choices=["a"]), "at most one of")]:
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(bad, metadata=md, timeout=RPC_TIMEOUT))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details(), e.value.details()


def test_generate_min_tokens(stub, pb, md):
    text = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    short = list(stub.Generate(_greedy(pb, text, 60), metadata=md, timeout=RPC_TIMEOUT))
    n = short[-1].usage.completion_tokens
    assert short[-1].finish_reason == pb[0].FINISH_REASON_STOP and n < 40
    longer = list(stub.Generate(_greedy(pb, text, 60, min_tokens=n + 10), metadata=md, timeout=RPC_TIMEOUT))
    assert longer[-1].usage.completion_tokens >= n + 10
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Generate(_greedy(pb, text, 5, min_tokens=6), metadata=md, timeout=RPC_TIMEOUT))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_tokens" in e.value.details()


def _http_chat(server, body: dict) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {server.api_key}"} if getattr(server, "api_key", None) else {}
    r = httpx.post(server.http_url + "/v1/chat/completions", headers=headers, json=body, timeout=RPC_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def _chat_request(pb, messages, max_tokens, **chat_fields):
    pb2 = pb[0]
    chat = pb2.Chat(messages=[pb2.ChatMessage(**m) for m in messages], **chat_fields)
    req = pb2.GenerateRequest(chat=chat, max_tokens=max_tokens)
    req.sampling.temperature = 0.0
    return req


MESSAGES = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three colours of the rainbow."}]


def test_chat_renders_as_http_chat_does(server, stub, pb, md):
    """A Chat prompt is the conversation /v1/chat/completions renders: the same prompt tokens
    and, greedy, the same text."""
    msgs = list(stub.Generate(_chat_request(pb, MESSAGES, 24), metadata=md, timeout=RPC_TIMEOUT))
    text = "".join(m.text for m in msgs)
    reply = _http_chat(server, {"messages": MESSAGES, "max_tokens": 24, "temperature": 0})
    assert text == reply["choices"][0]["message"]["content"]
    assert msgs[-1].usage.prompt_tokens == reply["usage"]["prompt_tokens"]
    assert msgs[-1].usage.completion_tokens == reply["usage"]["completion_tokens"]
    finish = {pb[0].FINISH_REASON_STOP: "stop", pb[0].FINISH_REASON_LENGTH: "length"}
    assert finish[msgs[-1].finish_reason] == reply["choices"][0]["finish_reason"]


WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}]


def test_chat_tool_calls_match_http(server, stub, pb, md):
    """tool_choice "required" over gRPC: the calls come back on the last message, as the HTTP
    API returns them for the same greedy request; a second turn with the result is text."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    req = _chat_request(pb, ask, 80, tools=json.dumps(WEATHER_TOOLS), tool_choice="required",
                        parallel_tool_calls=False)
    msgs = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
    last = msgs[-1]
    assert last.finish_reason == pb[0].FINISH_REASON_TOOL_CALLS, last
    assert "".join(m.text for m in msgs) == ""
    assert len(last.tool_calls) == 1 and last.tool_calls[0].name == "get_weather"
    args = json.loads(last.tool_calls[0].arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit"), args
    assert last.tool_calls[0].id.startswith("call_")

    reply = _http_chat(server, {"messages": ask, "max_tokens": 80, "temperature": 0, "tools": WEATHER_TOOLS,
                                "tool_choice": "required", "parallel_tool_calls": False})
    http_calls = reply["choices"][0]["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in http_calls] == \
        [("get_weather", args)]

    # The call and its result in the history; tool_choice "none" answers in text.
    pb2 = pb[0]
    history = _chat_request(pb, ask, 16, tools=json.dumps(WEATHER_TOOLS), tool_choice="none")
    history.chat.messages.append(pb2.ChatMessage(role="assistant", tool_calls=[last.tool_calls[0]]))
    history.chat.messages.append(pb2.ChatMessage(role="tool", tool_call_id=last.tool_calls[0].id,
                                                 content="18 C, sunny"))
    msgs = list(stub.Generate(history, metadata=md, timeout=RPC_TIMEOUT))
    assert msgs[-1].finish_reason in (pb2.FINISH_REASON_STOP, pb2.FINISH_REASON_LENGTH)
    assert not msgs[-1].tool_calls and "".join(m.text for m in msgs)


def test_bad_chats_are_invalid_argument(stub, pb, md):
    pb2 = pb[0]
    bad = [
        _chat_request(pb, [{"role": "robot", "content": "hi"}], 4),
        _chat_request(pb, [], 4),
        _chat_request(pb, MESSAGES, 4, tools="[{"),
        _chat_request(pb, MESSAGES, 4, tools=json.dumps(WEATHER_TOOLS), tool_choice="get_time"),
        _chat_request(pb, MESSAGES, 4, tool_choice="required"),
        _chat_request(pb, MESSAGES, 4, chat_template_kwargs="[]"),
        _chat_request(pb, MESSAGES, 4, tools="[" * 200 + "]" * 200),
    ]
    for req in bad:
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, e.value.details())
        assert e.value.details().startswith("chat"), e.value.details()
    # The server still answers.
    ok = list(stub.Generate(_chat_request(pb, MESSAGES, 2), metadata=md, timeout=RPC_TIMEOUT))
    assert ok[-1].usage.completion_tokens == 2


def test_mutated_chats_get_a_status_and_never_a_crash(stub, pb, md):
    """Seeded random chats: odd roles, empty or huge content, tool calls in any turn, tools and
    tool_choice of every shape. Every call ends OK or INVALID_ARGUMENT, and the server serves on."""
    pb2 = pb[0]
    rng = random.Random(7)
    texts = ["", "hi", "\u0000", "😀" * 30, "x" * 5000, "<|im_start|>user\nhi<|im_end|>", "<tool_call>{}</tool_call>"]
    tools = ["", "[]", "{}", "null", "[1]", json.dumps(WEATHER_TOOLS), "[" * 70 + "]" * 70, '[{"type": "function"}]',
             json.dumps([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
                 "n": {"type": "integer", "minimum": 1, "maximum": 3}}}}}]), "not json"]
    choices = ["", "none", "auto", "required", "get_weather", "f", "nope", "x" * 300]
    codes = collections.Counter()
    for _ in range(150):
        msgs = []
        for _ in range(rng.randint(0, 4)):
            m = pb2.ChatMessage(role=rng.choice(["user", "assistant", "system", "tool", "developer", "", "bot"]),
                                content=rng.choice(texts))
            if rng.random() < 0.2:
                m.tool_calls.add(id=rng.choice(["", "c1"]), name=rng.choice(["get_weather", "", "f"]),
                                 arguments=rng.choice(["{}", '{"city": "Oslo"}', "[", "3", ""]))
            if rng.random() < 0.2:
                m.tool_call_id = "c1"
            msgs.append(m)
        chat = pb2.Chat(messages=msgs, tools=rng.choice(tools), tool_choice=rng.choice(choices))
        if rng.random() < 0.3:
            chat.add_generation_prompt = rng.random() < 0.5
        if rng.random() < 0.1:
            chat.continue_final_message = True
        if rng.random() < 0.1:
            chat.chat_template_kwargs = rng.choice(["{}", "[]", '{"x": 1}', "{"])
        if rng.random() < 0.2:
            chat.parallel_tool_calls = rng.random() < 0.5
        req = pb2.GenerateRequest(chat=chat, max_tokens=rng.choice([1, 4]))
        if rng.random() < 0.1:
            req.json_object = True
        try:
            msgs_out = list(stub.Generate(req, metadata=md, timeout=RPC_TIMEOUT))
            assert msgs_out and msgs_out[-1].finish_reason != pb2.FINISH_REASON_UNSPECIFIED
            for call in msgs_out[-1].tool_calls:
                assert isinstance(json.loads(call.arguments), dict)
            codes["OK"] += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details(), req)
            codes[e.code().name] += 1
    assert codes["OK"] >= 10 and codes["INVALID_ARGUMENT"] >= 10, codes
    ok = list(stub.Generate(_chat_request(pb, MESSAGES, 2), metadata=md, timeout=RPC_TIMEOUT))
    assert ok[-1].usage.completion_tokens == 2
