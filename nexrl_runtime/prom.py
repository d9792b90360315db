"""Prometheus `/metrics` of a run (`logging.metrics_port`): the numbers people watch, updated after
every RL step by a tracker sink. prometheus-client is imported only when the port is set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nexrl_runtime.config.errors import ConfigError

# metric name -> (metrics.jsonl key, help)
GAUGES: dict[str, tuple[str, str]] = {
    "nexrl_step": ("step", "last completed RL step"),
    "nexrl_reward_mean": ("reward_mean", "mean reward of the last train batch"),
    "nexrl_accuracy": ("accuracy", "fraction correct in the last train batch"),
    "nexrl_val_accuracy": ("val_accuracy", "held-out accuracy at the last validation"),
    "nexrl_staleness_max": ("staleness_max", "max policy-version lag in the last train batch"),
    "nexrl_staleness_mean": ("staleness_mean", "mean policy-version lag in the last train batch"),
    "nexrl_push_seconds": ("sync_seconds", "seconds of the last weight push"),
    "nexrl_step_seconds": ("step_seconds", "seconds of the last RL step"),
    "nexrl_policy_version": ("policy_version", "policy version (weight pushes)"),
    "nexrl_loss": ("loss", "train loss of the last step"),
    "nexrl_filtered_too_long": ("filtered_too_long", "items dropped at load: prompt too long"),
    "nexrl_dropped_stale": ("dropped_stale", "trajectories dropped as over-stale"),
}


class PrometheusSink:
    """A TrackerSink that serves the latest step's values on http://host:port/metrics."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        try:
            import prometheus_client as prom
        except ImportError as err:
            raise ConfigError(
                "logging.metrics_port: serving /metrics needs prometheus-client "
                "(pip install prometheus-client); set logging.metrics_port: null to turn it off"
            ) from err
        self.registry = prom.CollectorRegistry()
        self.gauges = {
            name: prom.Gauge(name, help_, registry=self.registry) for name, (_, help_) in GAUGES.items()
        }
        self.tokens_per_second = prom.Gauge(
            "nexrl_tokens_per_second", "trained tokens per second of the last step (num_tokens/step_seconds)",
            registry=self.registry,
        )
        self.pool_size = prom.Gauge(
            "nexrl_pool_size", "trajectories waiting in the pool (read at scrape time)",
            registry=self.registry,
        )
        self.errors = prom.Gauge(
            "nexrl_errors", "failed samples (and skipped non-finite updates) by kind", ["kind"],
            registry=self.registry,
        )
        self.eval = prom.Gauge(
            "nexrl_eval", "the evaluator's own metrics, batch means", ["name"], registry=self.registry
        )
        try:
            self.server, self._thread = prom.start_http_server(port, host, registry=self.registry)
        except OSError as err:
            raise ConfigError(f"logging.metrics_port: cannot listen on {host}:{port}: {err}") from err
        self.port = int(self.server.server_port)

    def watch_pool(self, size: Callable[[], float]) -> None:
        """The pool's size is read on every scrape (it changes between steps)."""
        self.pool_size.set_function(size)

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **metrics}
        for name, (key, _) in GAUGES.items():
            value = row.get(key)
            if isinstance(value, int | float):
                self.gauges[name].set(float(value))
        tokens, seconds = metrics.get("num_tokens"), metrics.get("step_seconds")
        if isinstance(tokens, int | float) and isinstance(seconds, int | float) and seconds > 0:
            self.tokens_per_second.set(float(tokens) / float(seconds))
        for key, value in metrics.items():
            if not isinstance(value, int | float):
                continue
            if key.startswith("errors_"):
                self.errors.labels(kind=key.removeprefix("errors_")).set(float(value))
            elif key.startswith("eval/"):
                self.eval.labels(name=key.removeprefix("eval/")).set(float(value))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
