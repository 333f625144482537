"""Shared pytest fixtures for tests that drive the Peng binary.

repo_root: the checkout (from this file's location). peng_bin: <repo>/build/peng, or $PENG_BIN;
tests using it skip when it is missing. smollm2_path: the default GGUF model under models/;
skips when it has not been fetched (scripts/fetch_model.sh). run_peng: runs the binary and
fails the test with its stderr when it exits non-zero.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Reference implementation and fixture writers are plain modules, importable by the tests.
for sub in ("tests/reference", "tests/fixtures"):
    if str(REPO_ROOT / sub) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / sub))


def _missing(reason: str):
    """Skips locally; in CI (where `make test` builds and fetches everything) a missing
    prerequisite is a failure, so a broken set-up cannot pass as skipped tests."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def peng_bin() -> Path:
    path = Path(os.environ.get("PENG_BIN", REPO_ROOT / "build" / "peng"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        _missing(f"Peng binary not found at {path} (build it, or set PENG_BIN)")
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        _missing(f"model not found at {path} (run scripts/fetch_model.sh)")
    return path


@pytest.fixture(scope="session")
def run_peng(peng_bin):
    """run_peng("logits", "--model", p, ...) -> stdout (str); a non-zero exit fails the test."""
    def run(*args, timeout: float = 600) -> str:
        cmd = [str(peng_bin), *map(str, args)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\nstderr:\n{p.stderr[-4000:]}")
        return p.stdout
    return run
