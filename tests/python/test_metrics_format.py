"""The metrics text Peng renders is accepted by Prometheus' own checker (`promtool check metrics`).

base_test's MetricsSample.RenderEveryFeature renders a registry using every feature (gauges,
labelled counters, escaping in HELP and label values, histograms with and without labels) and,
given PENG_METRICS_SAMPLE, writes it to a file; promtool then parses and lints that file.

promtool's linter always reports "metric names should not contain ':'" for `peng:` names (colons
are legal in the format but its linter reserves them for recording rules; vLLM's `vllm:` names
get the same note). So: the text as rendered must parse, with no complaint other than that one,
and the same text with `peng:` spelled `peng_` must pass with no complaint at all.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> str:
    binary = Path(os.environ.get("PENG_BASE_TEST", REPO_ROOT / "build" / "base" / "base_test"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        _missing(f"base_test not found at {binary} (build it, or set PENG_BASE_TEST)")
    out = tmp_path_factory.mktemp("metrics") / "sample.prom"
    p = subprocess.run([str(binary), "--gtest_filter=MetricsSample.RenderEveryFeature"],
                       env={**os.environ, "PENG_METRICS_SAMPLE": str(out)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[  PASSED  ] 1 test" in p.stdout, p.stdout
    text = out.read_text()
    assert "peng:time_to_first_token_seconds_bucket" in text
    return text


def promtool(text: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        _missing("promtool not installed (scripts/setup.sh installs Debian's prometheus package)")
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


def test_rendered_text_parses_and_only_colons_are_noted(sample):
    p = promtool(sample)
    complaints = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    assert "error while linting" not in p.stdout + p.stderr, complaints
    assert p.returncode in (0, 3), complaints  # 1 = unparsable, 3 = lint notes
    others = [l for l in complaints
              if not (l.startswith("peng:") and l.endswith("metric names should not contain ':'"))]
    assert others == []


def test_rendered_text_passes_lint_without_the_prefix_colon(sample):
    p = promtool(sample.replace("peng:", "peng_"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert (p.stdout + p.stderr).strip() == ""


def test_promtool_rejects_broken_text():
    # Guards the two tests above against a promtool that accepts anything.
    p = promtool('# HELP x_total X.\n# TYPE x_total counter\nx_total{a="b} 1\n')
    assert p.returncode == 1
