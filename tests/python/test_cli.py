"""`peng generate` as a user runs it: real text, streamed continuation only, stats on stderr,
reproducible seeds, and one-line errors with non-zero exits for bad arguments and bad files;
and the command line shared by every command: switches, config files, exit codes (2 for bad
usage or config, 1 for a bad model file)."""
import subprocess

import pytest


def run(peng_bin, *args, input=None):
    return subprocess.run([str(peng_bin), *map(str, args)], capture_output=True, text=True,
                          input=input, timeout=300)


def test_chat_answers_a_factual_question(peng_bin, smollm2_path):
    # (Not France: SmolLM2's first answer token there is a near-tie, 0.08 logits apart in
    # float; the default int8 matmul activations flip it to "L'Étoile, ...", exactly as
    # llama.cpp's do. engine/README.md.)
    p = run(peng_bin, "generate", "--model", smollm2_path, "--chat", "--prompt",
            "What is the capital of Germany?", "--temperature", "0", "--max-tokens", "32")
    assert p.returncode == 0, p.stderr
    assert "Berlin" in p.stdout
    assert "<|im_end|>" not in p.stdout and "<|im_start|>" not in p.stdout
    assert "prompt:" in p.stderr and "generation:" in p.stderr and "tok/s" in p.stderr


def test_output_is_only_the_continuation(peng_bin, smollm2_path):
    prompt = "Once upon a time, in a small village by the sea,"
    p = run(peng_bin, "generate", "--model", smollm2_path, "--prompt", prompt,
            "--temperature", "0", "--max-tokens", "24")
    assert p.returncode == 0, p.stderr
    assert not p.stdout.startswith(prompt)
    assert len(p.stdout.strip()) > 10


def test_seed_reproduces_and_differs(peng_bin, smollm2_path):
    args = ["generate", "--model", smollm2_path, "--prompt", "My favourite food is",
            "--temperature", "1.0", "--top-p", "0.95", "--max-tokens", "24", "--output-ids"]
    a = run(peng_bin, *args, "--seed", "7")
    b = run(peng_bin, *args, "--seed", "7")
    assert a.returncode == 0 and b.returncode == 0
    assert a.stdout == b.stdout
    others = {run(peng_bin, *args, "--seed", s).stdout for s in ("8", "9", "10")}
    assert len(others | {a.stdout}) > 1


def test_interactive_chat_reads_turns_from_stdin(peng_bin, smollm2_path):
    p = run(peng_bin, "generate", "--model", smollm2_path, "--chat", "--temperature", "0",
            "--max-tokens", "16", input="Hello!\nWhat is 2 + 2?\n")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("generation:") == 2


@pytest.mark.parametrize("args, needle", [
    (["--prompt", "hi", "--bogus"], "unknown flag --bogus"),
    (["--prompt", "hi", "--max-tokens", "abc"], "--max-tokens"),
    (["--prompt", "hi", "--temperature", "-1"], "--temperature"),
    (["--prompt", "hi", "--top-p", "1.5"], "--top-p"),
    ([], "--prompt"),
])
def test_bad_arguments_give_one_line_and_exit_2(peng_bin, smollm2_path, args, needle):
    p = run(peng_bin, "generate", "--model", smollm2_path, *args)
    assert p.returncode == 2
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr


def _tensor_info(smollm2_path, name):
    """(offset of the type field in the tensor table, absolute data offset) of tensor `name`."""
    gguf = pytest.importorskip("gguf")
    t = next(t for t in gguf.GGUFReader(str(smollm2_path)).tensors if t.name == name)
    type_at = t.field.offset + 8 + len(t.name.encode()) + 4 + 8 * len(t.shape)
    return type_at, t.data_offset


def _bad_model_files(smollm2_path):
    """name -> (bytes or None for a missing file, what the one-line error must say)."""
    data = smollm2_path.read_bytes()
    cases = {
        "missing.gguf": (None, "does not exist"),
        "empty.gguf": (b"", "truncated file"),
        "garbage.gguf": (b"not a gguf file at all" * 10, "not a GGUF file"),
        # Cut inside the fixed header's counts, then just after them: truncated, not "implausible".
        "truncated_24.gguf": (data[:24], "truncated file"),
        "truncated_100.gguf": (data[:100], "truncated file"),
        "truncated_header.gguf": (data[:1_000_000], "truncated"),
        "truncated_data.gguf": (data[: len(data) // 2], "a truncated file"),
    }
    flipped = bytearray(data[:4_000_000])
    for i in range(100, 3_000_000, 9973):
        flipped[i] ^= 0x5A
    cases["flipped.gguf"] = (bytes(flipped), "")
    # The first key (general.architecture) 8 bytes longer: it takes in its type and value length.
    longer_key = bytearray(data)
    assert longer_key[24:32] == (20).to_bytes(8, "little")
    longer_key[24:32] = (28).to_bytes(8, "little")
    cases["key_length.gguf"] = (bytes(longer_key), "metadata key #0 at offset 24 is not a valid key")
    huge_key = bytearray(data)
    huge_key[24:32] = (1 << 29).to_bytes(8, "little")
    cases["huge_key.gguf"] = (bytes(huge_key), "a string of 536870912 bytes at offset 32 exceeds the file")
    # A Q4_1 tensor's type set to F16 in the tensor table: its bytes now cover the next tensors'.
    type_at, _ = _tensor_info(smollm2_path, "blk.0.ffn_down.weight")
    retyped = bytearray(data)
    assert retyped[type_at:type_at + 4] == (3).to_bytes(4, "little")  # Q4_1
    retyped[type_at:type_at + 4] = (1).to_bytes(4, "little")  # F16
    cases["retyped.gguf"] = (bytes(retyped), "tensor blk.0.ffn_down.weight (F16, data-section bytes")
    _, norm_at = _tensor_info(smollm2_path, "output_norm.weight")
    nan = bytearray(data)
    nan[norm_at:norm_at + 4] = bytes.fromhex("0000c07f")  # float32 NaN
    cases["nan.gguf"] = (bytes(nan), "tensor output_norm.weight has non-finite values")
    # A Q4_1 block's scale d set to an fp16 NaN, in a matrix of layer 3 (row 40): the matmuls
    # would turn it into NaN logits; the load names the tensor and the row instead.
    _, down_at = _tensor_info(smollm2_path, "blk.3.ffn_down.weight")
    nan_scale = bytearray(data)
    block = 40 * (1536 // 32) + 5  # row 40 (ffn_down is 576 rows of 1,536 columns), block 5
    nan_scale[down_at + 20 * block:down_at + 20 * block + 2] = (0x7E00).to_bytes(2, "little")
    cases["nan_scale.gguf"] = (bytes(nan_scale),
                               "tensor blk.3.ffn_down.weight: row 40 holds a non-finite scale (inf or NaN)")
    # llama.block_count lowered from 30 to 3: the tensors of layers 3-29 no longer fit it.
    key = b"llama.block_count"
    at = data.index(key) + len(key)
    assert data[at:at + 8] == (4).to_bytes(4, "little") + (30).to_bytes(4, "little")  # uint32 30
    fewer = bytearray(data)
    fewer[at + 4:at + 8] = (3).to_bytes(4, "little")
    cases["block_count.gguf"] = (bytes(fewer), "but llama.block_count is 3")
    return cases


def test_bad_model_files_give_one_line_errors_naming_the_file(peng_bin, smollm2_path, tmp_path):
    for name, (content, needle) in _bad_model_files(smollm2_path).items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        p = run(peng_bin, "generate", "--model", path, "--prompt", "hi", "--max-tokens", "2")
        # A negative code is a signal (crash); a bad model file exits 1 (2 is for bad usage).
        assert p.returncode == 1, f"{name}: exit code {p.returncode}\n{p.stderr}"
        lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("loading")]
        assert len(lines) == 1 and lines[0].startswith("peng generate: "), (name, p.stderr)
        assert str(path) in lines[0] and needle in lines[0], (name, lines[0])
        assert lines[0].isprintable() and lines[0].isascii(), (name, lines[0])  # no raw bytes


@pytest.mark.parametrize("command", [
    ["serve", "--grpc-port", "0"],
    ["bench", "--prompt-tokens", "4", "--gen-tokens", "1", "--reps", "1"],
    ["tokenize", "--text", "hi"],
    ["dump-tensor", "--tensor", "output_norm.weight", "--out", "x.npy"],
])
def test_every_command_exits_1_for_a_bad_model_file(peng_bin, smollm2_path, tmp_path, command):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_path.read_bytes()[:100])
    for model in (cut, tmp_path / "missing.gguf"):
        p = run(peng_bin, command[0], "--model", model, *command[1:])
        assert p.returncode == 1, (model, p.stderr)
        assert str(model) in p.stderr, p.stderr


def test_empty_prompt_is_an_error_not_an_abort(peng_bin, smollm2_path):
    p = run(peng_bin, "generate", "--model", smollm2_path, "--prompt", "", "--max-tokens", "2")
    assert p.returncode == 2, p.stderr
    assert "peng generate: --prompt is empty" in p.stderr


def _print_config(peng_bin, *args):
    p = run(peng_bin, "serve", "--print-config", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("args, expected", [
    (["--metrics-auth"], ["metrics_auth: true"]),
    (["--metrics-auth", "--http-port", "8210"], ["metrics_auth: true", "http_port: 8210"]),
    (["--http-port", "8210", "--metrics-auth", "false"], ["metrics_auth: false", "http_port: 8210"]),
    (["--metrics-auth=false", "--enable-prefix-caching"], ["metrics_auth: false", "enable_prefix_caching: true"]),
    (["--enable-prefix-caching", "FALSE", "--pin-threads"], ["enable_prefix_caching: false", "pin_threads: true"]),
    (["--pin-threads", "auto", "--metrics-auth"], ["pin_threads: auto", "metrics_auth: true"]),
])
def test_serve_switches_stand_alone_or_take_true_false(peng_bin, args, expected):
    out = _print_config(peng_bin, *args)
    for line in expected:
        assert f"  {line}\n" in out, (args, out)


def test_serve_switch_leaves_a_valued_flag_its_value(peng_bin):
    p = run(peng_bin, "serve", "--print-config", "--metrics-auth", "--http-port")
    assert p.returncode == 2 and "peng serve: --http-port needs a value" in p.stderr, p.stderr


def test_a_valued_flag_never_takes_the_next_flag_as_its_value(peng_bin, smollm2_path):
    # `--api-key --print-config` would otherwise serve with the key "--print-config".
    p = run(peng_bin, "serve", "--api-key", "--print-config")
    assert p.returncode == 2 and "--api-key needs a value, got the flag '--print-config'" in p.stderr, p.stderr
    out = _print_config(peng_bin, "--api-key=--odd-key")  # the = form still takes any value
    assert "api_keys:" in out
    p = run(peng_bin, "generate", "--model", "--prompt", "hi")
    assert p.returncode == 2 and "--model needs a value" in p.stderr, p.stderr
    p = run(peng_bin, "tokenize", "--model", smollm2_path, "--text", "--decode")
    assert p.returncode == 2 and "--text needs a value" in p.stderr, p.stderr


def test_print_config_is_a_switch_like_the_others(peng_bin):
    for args in (["--print-config=true"], ["--print-config", "TRUE"]):
        p = run(peng_bin, "serve", *args)
        assert p.returncode == 0 and "http_port:" in p.stdout, (args, p.stderr)
    p = run(peng_bin, "serve", "--print-config=maybe")
    assert p.returncode == 2 and "--print-config takes true or false, got 'maybe'" in p.stderr, p.stderr
    # --print-config=false serves: with a missing model it fails loading (exit 1), not printing.
    p = run(peng_bin, "serve", "--print-config=false", "--model", "/nonexistent/m.gguf")
    assert p.returncode == 1 and "http_port:" not in p.stdout, p.stdout


def test_tokenize_decode_refuses_ids_outside_the_vocabulary(peng_bin, smollm2_path):
    for ids in ("99999", "-1", "1,2,99999", "[4294967297]"):
        p = run(peng_bin, "tokenize", "--model", smollm2_path, "--decode", "--text", ids)
        assert p.returncode == 2 and "outside the vocabulary" in p.stderr, (ids, p.stderr)
    p = run(peng_bin, "tokenize", "--model", smollm2_path, "--decode", "--jsonl", input="[1, 2]\n[70000]\n")
    assert p.returncode == 1 and "stdin line 2" in p.stderr and "outside the vocabulary" in p.stderr, p.stderr
    p = run(peng_bin, "tokenize", "--help")
    assert p.returncode == 0 and "--skip-special" in p.stdout, p.stdout


def test_command_switches_stand_alone_or_take_true_false(peng_bin, tmp_path):
    missing = tmp_path / "missing.gguf"
    # The switch is parsed (the model is what fails, exit 1) and never swallows the next flag.
    for args in (["--chat", "--prompt", "hi"], ["--prompt", "hi", "--chat", "false"],
                 ["--prompt", "hi", "--chat=TRUE"]):
        p = run(peng_bin, "generate", *args, "--model", missing)
        assert p.returncode == 1 and "does not exist" in p.stderr, (args, p.stderr)
    p = run(peng_bin, "generate", "--prompt", "hi", "--chat=maybe", "--model", missing)
    assert p.returncode == 2 and "--chat takes true or false, got 'maybe'" in p.stderr, p.stderr
    p = run(peng_bin, "bench", "--pin-threads", "1", "--model", missing)
    assert p.returncode == 2 and "unexpected argument '1'" in p.stderr, p.stderr


def test_config_file_problems_exit_2_naming_the_file(peng_bin, tmp_path):
    multi = tmp_path / "multi.yaml"
    multi.write_text("server:\n  http_port: 8100\n---\nserver:\n  http_port: 8200\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("server: " + "[" * 3000 + "]" * 3000 + "\n")
    cases = [
        (["--config", tmp_path], f"config file {tmp_path} is a directory"),
        (["--config", tmp_path / "missing.yaml"], "cannot read config file"),
        (["--config", multi], f"{multi}:4:1: invalid YAML: a second document"),
        (["--config", deep], "invalid YAML: nested too deeply: more than"),
        (["--kv-budget", "64G"], 'got "64G"; did you mean 64GiB? (from --kv-budget)'),
    ]
    for args, needle in cases:
        p = run(peng_bin, "serve", "--print-config", *args)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr, (args, p.stderr)
        assert "did you mean ?" not in p.stderr and "bad file" not in p.stderr


def test_a_flag_replaces_a_bad_value_in_the_config_file(peng_bin, tmp_path):
    config = tmp_path / "port.yaml"
    config.write_text('server:\n  http_port: "abc"\n')
    assert "  http_port: 8201\n" in _print_config(peng_bin, "--config", config, "--http-port", "8201")
    p = run(peng_bin, "serve", "--print-config", "--config", config)
    assert p.returncode == 2
    assert 'server.http_port: expected an integer, got "abc" (line 2, column 14)' in p.stderr, p.stderr
    assert "--http-port" not in p.stderr


def test_printed_api_keys_cannot_be_loaded_back_as_keys(peng_bin, tmp_path):
    out = _print_config(peng_bin, "--api-key", "sk-secret")
    assert "sk-secret" not in out and '  api_keys: "<redacted: 1 key>"\n' in out, out
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    p = run(peng_bin, "serve", "--print-config", "--config", printed)
    assert p.returncode == 2
    assert 'server.api_keys: expected a list of strings, got "<redacted: 1 key>"' in p.stderr, p.stderr


def test_serve_warns_when_max_model_len_exceeds_the_models_context(peng_bin, smollm2_path, tmp_path):
    from conftest import start_peng_server, stop_peng_server
    server = start_peng_server(peng_bin, smollm2_path, tmp_path, "", "--max-model-len", "100000")
    try:
        warnings = [l for l in server.log().splitlines() if "max_model_len 100000" in l]
        assert len(warnings) == 1 and "exceeds the model's context length; serving 8192" in warnings[0], \
            server.log()
    finally:
        assert stop_peng_server(server) == 0


@pytest.mark.parametrize("budget,code,needle", [("1TiB", 1, "memory available"),  # a runtime limit
                                                 ("64TiB", 2, "page ids are int32")])  # never valid
def test_serve_refuses_a_kv_budget_the_machine_cannot_hold(peng_bin, smollm2_path, budget, code, needle):
    # An error naming the key at start-up, not an abort or the OOM killer mid-run.
    from conftest import _free_port
    r = subprocess.run([str(peng_bin), "serve", "--model", str(smollm2_path), "--kv-budget", budget,
                        "--http-port", str(_free_port()), "--grpc-port", str(_free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert "engine.kv_budget" in last and needle in last, last


def test_serve_refuses_a_kv_budget_over_its_cgroup_memory_limit(peng_bin, smollm2_path):
    # A container's memory limit is its cgroup's, whatever the node has free: the default 1GiB
    # KV budget under a 700 MB limit must be an error naming the key, not the OOM killer.
    import os
    from conftest import _free_port
    group = f"/sys/fs/cgroup/memory/peng-test-{os.getpid()}"  # cgroup v1, as on this machine kind
    try:
        os.mkdir(group)
    except OSError as e:
        pytest.skip(f"cannot create a memory cgroup here ({e})")
    try:
        with open(f"{group}/memory.limit_in_bytes", "w") as f:
            f.write("700M")
        r = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"', str(peng_bin), "serve",
                            "--model", str(smollm2_path), "--http-port", str(_free_port()), "--grpc-port", "0"],
                           capture_output=True, text=True, timeout=120)
    finally:
        os.rmdir(group)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert "engine.kv_budget" in last and "memory available" in last, last


def test_bench_batch_decodes_several_sequences_together(peng_bin, smollm2_path):
    import json
    p = run(peng_bin, "bench", "--model", smollm2_path, "--batch", "3", "--prompt-tokens", "20",
            "--gen-tokens", "4", "--reps", "1", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["batch"] == 3 and r["tg_tok_s"] > 0 and r["step_ms"] > 0
    bad = run(peng_bin, "bench", "--model", smollm2_path, "--batch", "-2")
    assert bad.returncode == 2 and "--batch" in bad.stderr


@pytest.mark.parametrize("command", ["serve", "generate", "bench", "perplexity", "logits"])
def test_help_flag_prints_the_command_usage(peng_bin, command):
    for flag in ("--help", "-h"):
        p = run(peng_bin, command, flag)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"usage: peng {command} "), p.stdout
