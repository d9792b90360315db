"""`logging.metrics_port`: a real `nexrl run` serves /metrics, and its series move while it runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nexrl_runtime.config.errors import ConfigError
from tests.integration.conftest import RECIPE, SHRINK

SMALL = [*SHRINK, "validation.every=1000", "logging.plot=false", "logging.progress_bar=false"]


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(nexrl_[a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_for(cond, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)  # polling a condition, not waiting a fixed time
    raise AssertionError(f"timed out waiting for {what}")


def test_metrics_endpoint_during_a_run(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexrl_runtime.cli", "run", "-c", str(RECIPE), *SMALL,
         "total_steps=100000", "logging.metrics_port=0", "logging.metrics_host=127.0.0.1",
         f"output_dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"metrics: (http://\S+/metrics)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the run did not print its metrics URL"
        first = wait_for(lambda: (s := scrape(url)).get("nexrl_step", 0) >= 1 and s, "step 1")
        for name in ("nexrl_reward_mean", "nexrl_accuracy", "nexrl_tokens_per_second", "nexrl_staleness_max",
                     "nexrl_pool_size", "nexrl_push_seconds", 'nexrl_errors{kind="evaluator"}',
                     'nexrl_errors{kind="inference"}'):
            assert name in first, (name, sorted(first))
        assert first["nexrl_tokens_per_second"] > 0
        later = wait_for(lambda: (s := scrape(url))["nexrl_step"] > first["nexrl_step"] and s, "a later step")
        assert later["nexrl_policy_version"] > first["nexrl_policy_version"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_missing_prometheus_client_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    from nexrl_runtime.prom import PrometheusSink

    with pytest.raises(ConfigError, match=r"logging.metrics_port: serving /metrics needs prometheus-client"):
        PrometheusSink(0)


def test_sink_serves_what_it_was_given() -> None:
    from nexrl_runtime.prom import PrometheusSink

    sink = PrometheusSink(0, "127.0.0.1")
    try:
        sink.on_step(3, {"reward_mean": 0.5, "errors_evaluator": 2.0, "eval/chars": 4.0, "note": "x"})
        got = scrape(f"http://127.0.0.1:{sink.port}/metrics")
        assert got["nexrl_step"] == 3 and got["nexrl_reward_mean"] == 0.5
        assert got['nexrl_errors{kind="evaluator"}'] == 2.0 and got['nexrl_eval{name="chars"}'] == 4.0
    finally:
        sink.close()
