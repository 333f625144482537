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


class PengServer:
    """A live `peng serve` on free loopback ports (see the peng_server fixture)."""

    def __init__(self, proc, http_port, grpc_port, log_path):
        self.proc = proc
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.log_path = log_path

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_peng_server(peng_bin, model_path, tmp_dir, extra_yaml: str = "", *flags) -> PengServer:
    """Starts `peng serve` with a config written to tmp_dir and waits until /ready is 200."""
    import time
    import httpx
    http_port, grpc_port = _free_port(), _free_port()
    config = Path(tmp_dir) / "peng.yaml"
    config.write_text(
        f"model: {{path: {model_path}, name: SmolLM2-135M-Instruct}}\n"
        f"server: {{host: 127.0.0.1, http_port: {http_port}, grpc_port: {grpc_port}, drain_timeout_s: 10}}\n"
        + extra_yaml)
    log_path = Path(tmp_dir) / "peng-serve.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(peng_bin), "serve", "--config", str(config), *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    server = PengServer(proc, http_port, grpc_port, log_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peng serve exited {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.http_url + "/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"peng serve did not become ready:\n{server.log()}")


def stop_peng_server(server: PengServer) -> int:
    """SIGTERM, then the exit code (drain must end with 0)."""
    import signal
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return -9


@pytest.fixture(scope="session")
def peng_server(peng_bin, smollm2_path, tmp_path_factory):
    """One shared `peng serve` (default engine and scheduler settings) for the API tests."""
    server = start_peng_server(peng_bin, smollm2_path, tmp_path_factory.mktemp("peng-serve"))
    yield server
    code = stop_peng_server(server)
    assert code == 0, f"peng serve exited {code} on SIGTERM:\n{server.log()[-3000:]}"
