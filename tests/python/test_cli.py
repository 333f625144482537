"""`peng generate` as a user runs it: real text, streamed continuation only, stats on stderr,
reproducible seeds, and one-line errors with non-zero exits for bad arguments and bad files."""
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


def test_bad_model_files_give_one_line_errors(peng_bin, smollm2_path, tmp_path):
    data = smollm2_path.read_bytes()
    cases = {
        "missing.gguf": None,
        "empty.gguf": b"",
        "garbage.gguf": b"not a gguf file at all" * 10,
        "truncated_header.gguf": data[:1_000_000],
        "truncated_data.gguf": data[: len(data) // 2],
    }
    flipped = bytearray(data[:4_000_000])
    for i in range(100, 3_000_000, 9973):
        flipped[i] ^= 0x5A
    cases["flipped.gguf"] = bytes(flipped)
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        p = run(peng_bin, "generate", "--model", path, "--prompt", "hi", "--max-tokens", "2")
        # A negative code is a signal (crash); errors exit 1 or 2.
        assert p.returncode in (1, 2), f"{name}: exit code {p.returncode}"
        lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("loading")]
        assert len(lines) == 1 and lines[0].startswith("peng generate:"), (name, p.stderr)


def test_bench_batch_decodes_several_sequences_together(peng_bin, smollm2_path):
    import json
    p = run(peng_bin, "bench", "--model", smollm2_path, "--batch", "3", "--prompt-tokens", "20",
            "--gen-tokens", "4", "--reps", "1", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["batch"] == 3 and r["tg_tok_s"] > 0 and r["step_ms"] > 0
    bad = run(peng_bin, "bench", "--model", smollm2_path, "--batch", "-2")
    assert bad.returncode == 2 and "--batch" in bad.stderr
