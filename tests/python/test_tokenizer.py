"""Peng's tokenizer against Hugging Face `tokenizers` on the default model (SmolLM2).

The reference is built in Python from the SAME vocabulary, merges and special tokens read out of
the GGUF with the `gguf` package (byte-level BPE; pre-tokenizer Digits(individual) then
ByteLevel; ByteLevel decoder), so any difference is Peng's. Thousands of deterministic strings
(seeded RNG + a hand-written list) go through `peng tokenize --jsonl` in one process.
"""
from __future__ import annotations

import json
import random
import subprocess

import pytest

SEED = 20240611
NUM_GENERATED = 2400

SPECIALS_IN_TEXT = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>"]

HAND_WRITTEN = [
    "", " ", "  ", "\n", "\t", "\r\n", "a", "Hello, world!", "Hello world", " Hello world",
    "hello   world  ", "I'm here, you're there, they'll go; we'd've; it's", "DON'T SHOUT'S",
    "12345", "1 2 3", "3.14159", "-42", "1,000,000.50", "0x1F 0b1010 1e-9", "2024-06-11T12:00Z",
    "٣٤٥ ١٢", "１２３ fullwidth", "Ⅻ roman ½ ¾ ²³", "𝟘𝟙𝟚 math digits",
    "café naïve résumé coöperate", "Ελληνικά κείμενα", "Русский текст, ёжик!", "עברית שלום",
    "العربية: مرحبا بالعالم", "हिन्दी भाषा", "ภาษาไทย", "日本語のテキストです。", "中文，标点！",
    "한국어 텍스트", "emoji 🎉🚀👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈", "🇯🇵🇫🇷", "e\u0301 combining a\u0308",
    "zero\u200bwidth\u200djoiner", "nbsp\u00a0here", "ideographic\u3000space", "en\u2002em\u2003",
    "line\u2028sep\u2029para", "next\u0085line", "mongolian\u180evs", "\u000b\u000c vt ff",
    "tabs\tand\nnewlines\n\n\nmixed \t \n \r\n", "    indented code", "\n\n\n", "   \n   ",
    "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "<div class=\"x\">&amp;</div>", "SELECT * FROM t WHERE id = 7;", "$ ls -la | grep '^d'",
    "path/to/file.txt C:\\Windows\\System32", "https://example.com/a?b=c&d=e#f", "a@b.co",
    "!!!???...,,,;;;:::", "((()))[[]]{{}}", "~`^_|\\", "«quotes» “smart” ‘single’ — dash – en",
    "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>", "x<|endoftext|>y", "<|im_start", "im_start|>", "<|im_start|>>",
    "<<|im_end|>", "<repo_name>peng<file_sep>main.cc", "<|IM_START|>", "< |im_start| >",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the the the the", "ĠĊ ġ Ā literal byte-level chars", "\x00\x01\x02 controls \x7f",
    " " * 50, "\t" * 17, "\n" * 9 + "x", "word" + " " * 7 + "word", "x\n \n \ny",
]

# Code point pools for generated strings.
POOLS = {
    "ascii": [chr(c) for c in range(0x20, 0x7F)],
    "latin": [chr(c) for c in range(0xC0, 0x250)],
    "greek_cyrillic": [chr(c) for c in range(0x391, 0x3CA)] + [chr(c) for c in range(0x410, 0x450)],
    "arabic_hebrew": [chr(c) for c in range(0x5D0, 0x5EB)] + [chr(c) for c in range(0x621, 0x64B)],
    "indic_thai": [chr(c) for c in range(0x905, 0x940)] + [chr(c) for c in range(0xE01, 0xE3A)],
    "cjk": [chr(c) for c in range(0x4E00, 0x4E00 + 500)] + [chr(c) for c in range(0x3041, 0x3097)]
    + [chr(c) for c in range(0x30A1, 0x30FB)] + [chr(c) for c in range(0xAC00, 0xAC00 + 200)],
    "emoji": [chr(c) for c in range(0x1F300, 0x1F5FF)] + [chr(c) for c in range(0x1F600, 0x1F64F)]
    + ["\u200d", "\ufe0f", "\U0001F3FD"],
    "digits": list("0123456789") + ["٣", "٤", "१", "２", "½", "²"],
    "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "«", "»", "¿", "¡", "。", "，"],
    "space": [" ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2009", "\v", "\f"],
}

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Peng", "token",
         "serving", "daemon", "GPU", "KV-cache", "don't", "it's", "we'll", "naïve", "東京", "Москва",
         "🙂", "3.5", "2048", "x_1", "fooBar", "snake_case", "CamelCase", "#include", "std::vector",
         "==", "->", "=>", "/*", "*/", "0.0001", "100%", "$5", "€10", "ñandú"]


def random_valid_utf8(rng: random.Random, n: int) -> str:
    """Arbitrary scalar values (no surrogates): any byte pattern valid UTF-8 allows."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            cp = rng.randrange(0x00, 0x80)
        elif r < 0.6:
            cp = rng.randrange(0x80, 0x800)
        elif r < 0.9:
            cp = rng.randrange(0x800, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x110000)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out)


def generate_strings() -> list[str]:
    rng = random.Random(SEED)
    out = list(HAND_WRITTEN)
    pools = list(POOLS)
    for i in range(NUM_GENERATED):
        kind = i % 6
        if kind == 0:  # characters from one or two scripts, with spaces
            a, b = rng.choice(pools), rng.choice(pools)
            s = "".join(rng.choice(POOLS[rng.choice([a, b, "space"])])
                        for _ in range(rng.randint(1, 40)))
        elif kind == 1:  # word salad with mixed whitespace runs and numbers
            parts = []
            for _ in range(rng.randint(1, 15)):
                parts.append(rng.choice(WORDS) if rng.random() < 0.8
                             else str(rng.randint(0, 10 ** rng.randint(1, 12))))
                parts.append("".join(rng.choice(" \t\n\r") for _ in range(rng.choice([1, 1, 1, 2, 3, 6]))))
            s = "".join(parts)
        elif kind == 2:  # random valid UTF-8 (any scalar value)
            s = random_valid_utf8(rng, rng.randint(1, 30))
        elif kind == 3:  # special tokens embedded in text
            parts = []
            for _ in range(rng.randint(1, 6)):
                parts.append(rng.choice(SPECIALS_IN_TEXT) if rng.random() < 0.4
                             else rng.choice(WORDS) + rng.choice(["", " ", "\n", "  "]))
            s = "".join(parts)
        elif kind == 4:  # code-like
            ident = lambda: rng.choice(WORDS[:14]) + rng.choice(["", "_", "2", "X"])  # noqa: E731
            s = rng.choice([
                f"def {ident()}({ident()}, {ident()}):\n    return {ident()} + {rng.randint(0, 999)}\n",
                f"if ({ident()} >= {rng.random():.4f}) {{\n\t{ident()}++;\n}}",
                f"{ident()} = [{', '.join(str(rng.randint(-99, 99)) for _ in range(rng.randint(0, 6)))}]",
                f"// {ident()} {ident()}\n#define {ident().upper()} 0x{rng.randint(0, 2**32):X}",
            ])
        else:  # anything from every pool, including whitespace-heavy
            s = "".join(rng.choice(POOLS[rng.choice(pools)]) for _ in range(rng.randint(1, 60)))
        out.append(s)
    return out


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_path):
    gguf = pytest.importorskip("gguf")
    tokenizers = pytest.importorskip("tokenizers")
    reader = gguf.GGUFReader(str(smollm2_path))

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    f = reader.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
    bpe = tokenizers.models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = tokenizers.Tokenizer(bpe)
    pre = tokenizers.pre_tokenizers
    tok.pre_tokenizer = pre.Sequence([pre.Digits(individual_digits=True),
                                      pre.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = tokenizers.decoders.ByteLevel()
    specials = [tokens[i] for i, t in enumerate(types) if t == 3]
    assert "<|im_start|>" in specials
    tok.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False)
                            for s in specials])
    return tok


def gpt2_byte_to_char() -> dict[int, str]:
    """The GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@pytest.fixture(scope="session")
def unrepresentable_bytes(hf_tokenizer) -> set[int]:
    """Bytes whose byte-level token is missing from the vocabulary (SmolLM2 lacks a few control
    bytes and the lead bytes 0xF1/0xF2). Both Peng and Hugging Face drop them when encoding."""
    vocab = hf_tokenizer.get_vocab()
    return {b for b, c in gpt2_byte_to_char().items() if c not in vocab}


def peng_jsonl(peng_bin, model, lines, *flags):
    stdin = "".join(json.dumps(x) + "\n" for x in lines)
    p = subprocess.run([str(peng_bin), "tokenize", "--model", str(model), "--jsonl", *flags],
                       input=stdin.encode(), capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    # split("\n"), not splitlines(): decoded text may hold U+2028 and friends unescaped.
    out = [json.loads(line) for line in p.stdout.decode().split("\n")[:-1]]
    assert len(out) == len(lines)
    return out


def report(mismatches, hf):
    lines = []
    for s, want, got in mismatches[:10]:
        lines.append(f"{s!r}\n  hf:   {want} {[hf.id_to_token(i) for i in want]}\n"
                     f"  peng: {got} {[hf.id_to_token(i) for i in got]}")
    return f"{len(mismatches)} mismatches, first ones:\n" + "\n".join(lines)


def test_encode_matches_hugging_face(peng_bin, smollm2_path, hf_tokenizer):
    texts = generate_strings()
    assert len(texts) >= 2000
    got = peng_jsonl(peng_bin, smollm2_path, texts, "--no-bos")
    want = [e.ids for e in hf_tokenizer.encode_batch(texts, add_special_tokens=False)]
    mismatches = [(s, w, g) for s, w, g in zip(texts, want, got) if w != g]
    assert not mismatches, report(mismatches, hf_tokenizer)


def test_special_markup_as_text_matches_hugging_face(peng_bin, smollm2_path, hf_tokenizer):
    texts = [s for s in generate_strings() if "<" in s]
    assert len(texts) > 100
    got = peng_jsonl(peng_bin, smollm2_path, texts, "--no-bos", "--no-special")
    hf_tokenizer.encode_special_tokens = True
    try:
        want = [e.ids for e in hf_tokenizer.encode_batch(texts, add_special_tokens=False)]
    finally:
        hf_tokenizer.encode_special_tokens = False
    mismatches = [(s, w, g) for s, w, g in zip(texts, want, got) if w != g]
    assert not mismatches, report(mismatches, hf_tokenizer)


def test_decode_round_trips(peng_bin, smollm2_path, hf_tokenizer, unrepresentable_bytes):
    texts = generate_strings()
    ids = peng_jsonl(peng_bin, smollm2_path, texts, "--no-bos")
    decoded = peng_jsonl(peng_bin, smollm2_path, ids, "--decode")
    representable = [(s, d) for s, d in zip(texts, decoded)
                     if not unrepresentable_bytes.intersection(s.encode())]
    assert len(representable) >= 2000
    bad = [(s, d) for s, d in representable if s != d]
    assert not bad, f"{len(bad)} strings do not round-trip, e.g. {bad[:5]!r}"
    # Peng's text equals what Hugging Face decodes from the same ids.
    assert decoded == hf_tokenizer.decode_batch(ids, skip_special_tokens=False)


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def hf_folder_variant(hf_tokenizer, tmp_path, llama3_style: bool):
    """The reference tokenizer saved as a Hugging Face folder (tokenizer.json, list-form
    merges), optionally switched to Llama-3 pre-tokenization (Split regex, then ByteLevel
    without its own regex, ignore_merges)."""
    import tokenizers
    tok = tokenizers.Tokenizer.from_str(hf_tokenizer.to_str())
    if llama3_style:
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = True
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}
        tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
         "chat_template": "{{ x }}"}))
    return tok


@pytest.mark.parametrize("llama3_style", [False, True], ids=["smollm", "llama3-split"])
def test_hf_folder_matches_hugging_face(peng_bin, hf_tokenizer, tmp_path, llama3_style):
    ref = hf_folder_variant(hf_tokenizer, tmp_path, llama3_style)
    texts = generate_strings()
    got = peng_jsonl(peng_bin, tmp_path, texts, "--no-bos")
    want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    mismatches = [(s, w, g) for s, w, g in zip(texts, want, got) if w != g]
    assert not mismatches, report(mismatches, ref)


def test_bad_arguments_exit_2(peng_bin, smollm2_path):
    for args in (["--text", "x"], ["--model", str(smollm2_path)],
                 ["--model", str(smollm2_path), "--text", "x", "--frobnicate"],
                 ["--model", str(smollm2_path), "--text", "x", "--jsonl"]):
        p = subprocess.run([str(peng_bin), "tokenize", *args], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2, args
        assert p.stderr.count("\n") == 1 and "peng tokenize:" in p.stderr, p.stderr


def test_text_mode(peng_bin, smollm2_path):
    p = subprocess.run([str(peng_bin), "tokenize", "--model", str(smollm2_path), "--text",
                        "Hello, world!"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [19556, 28, 905, 17]
    p = subprocess.run([str(peng_bin), "tokenize", "--model", str(smollm2_path), "--decode",
                        "--text", "[19556, 28, 905, 17]"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Hello, world!\n"
