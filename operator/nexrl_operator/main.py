"""`nexrl-operator run`: start kopf with the NexRLJob and admission handlers (standalone by default).

kopf is imported only when the operator runs, so that ``add_arguments`` can build the CLI cheaply.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .settings import DEFAULT_STATUS_INTERVAL, PREFIX, WORKLOADS

if TYPE_CHECKING:
    import kopf

    from .builders import OperatorDefaults


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `nexrl-operator run` (for this module's parser or the CLI's subcommand)."""
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="serve this namespace (repeatable; globs allowed); default: all namespaces")
    p.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--peering", metavar="NAME",
                   help="run several replicas with kopf peering under this name (needs kopf's peering CRDs); "
                        "default: standalone")
    p.add_argument("--status-interval", type=float, default=DEFAULT_STATUS_INTERVAL,
                   help="seconds between status refreshes of each job (default: %(default)s)")
    p.add_argument("--runtime-service-account", metavar="NAME",
                   help="ServiceAccount of the NexRL pods (Ray head/workers, trainers), which patch their "
                        "job's status; it must exist in the job's namespace (the Helm chart creates it); "
                        "default: the namespace's default account")
    p.add_argument("--default-image", metavar="IMAGE",
                   help="NexRL runtime image of jobs that set no spec.image (default: none, spec.image is "
                        "required)")
    p.add_argument("--default-inference-image", metavar="IMAGE",
                   help="vLLM image of jobs that set no spec.inference.image (default: the job's spec.image)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on this port (/metrics); default: not served")
    p.add_argument("--metrics-address", default="0.0.0.0",
                   help="address for --metrics-port (default: %(default)s)")
    p.add_argument("--no-quotas", dest="quotas", action="store_false",
                   help="do not watch NexRLQuotas and Namespaces (an operator without cluster-wide read "
                        "access to them); namespaces' ResourceQuotas still apply")
    p.add_argument("-v", "--verbose", action="store_true", help="log kopf's own decisions")
    p.add_argument("--debug", action="store_true", help="log every API request (very verbose)")
    return p


class RoutineSuccess(logging.Filter):
    """Drops kopf's INFO lines that only say a handler ran (``Timer 'status' succeeded.`` every status
    interval per job, ``Handler 'admitted' succeeded.`` on every event): the handlers log what they
    did (``ns/name: created RayJob x``); failures and retries still show."""

    ROUTINE = re.compile(r"(Handler|Timer|Daemon) '[^']*' succeeded\."
                         r"|\w+ is processed: \d+ succeeded; 0 failed\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and self.ROUTINE.fullmatch(record.getMessage()))


def configure_logging(verbose: bool = False, debug: bool = False) -> None:
    """kopf's log setup, with every line about a job prefixed ``[ns/name]``; without ``verbose``,
    kopf's routine success lines are dropped (``RoutineSuccess``)."""
    import kopf

    kopf.configure(verbose=verbose, debug=debug, log_prefix=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    objects = logging.getLogger("kopf.objects")
    for old in [f for f in objects.filters if isinstance(f, RoutineSuccess)]:
        objects.removeFilter(old)
    if not (verbose or debug):
        objects.addFilter(RoutineSuccess())


def kopf_settings() -> kopf.OperatorSettings:
    """kopf settings: our finalizer and annotation prefixes, events from `nexrl-operator`, watch filters."""
    import kopf

    from .builders.common import JOB_LABEL

    s = kopf.OperatorSettings()
    s.persistence.finalizer = f"{PREFIX}/finalizer"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    s.posting.reporting_component = "nexrl-operator"
    s.posting.event_name_prefix = "nexrl-operator-"
    for workload in WORKLOADS:  # server-side filtering: only our children reach the operator
        s.watching.label_selectors[workload] = JOB_LABEL
    return s


def operator_defaults(args: argparse.Namespace) -> OperatorDefaults:
    """The `run` options that shape every job's children (handlers read them from kopf's memo)."""
    from .builders import OperatorDefaults

    return OperatorDefaults(service_account=args.runtime_service_account or None,
                            inference_image=args.default_inference_image or None,
                            image=args.default_image or None)


def run(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM; takes the `run` options (a list or parsed) and returns 0."""
    import kopf

    from . import handlers, metrics

    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        words = list(sys.argv[1:] if argv is None else argv)
        parser = add_arguments(argparse.ArgumentParser(prog="nexrl-operator run", description=__doc__))
        args = parser.parse_args(words[1:] if words[:1] == ["--"] else words)
    configure_logging(verbose=args.verbose, debug=args.debug)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, handlers.Options(status_interval=args.status_interval, quotas=args.quotas))
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_address)
    kopf.run(
        registry=registry,
        settings=kopf_settings(),
        standalone=args.peering is None,
        peering_name=args.peering,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(defaults=operator_defaults(args)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
