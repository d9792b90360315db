"""`nexrl-operator run`: start kopf with the NexRLJob handlers (standalone, no peering, by default)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf

from . import handlers

PREFIX = "nexrl.io"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexrl-operator run", description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="serve this namespace (repeatable; globs allowed); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace (default)")
    p.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--peering", metavar="NAME",
                   help="run several replicas with kopf peering under this name (needs kopf's peering CRDs); "
                        "default: standalone")
    p.add_argument("--status-interval", type=float, default=handlers.Options.status_interval,
                   help="seconds between status refreshes of each job (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log kopf's own decisions")
    p.add_argument("--debug", action="store_true", help="log every API request (very verbose)")
    return p


def settings() -> kopf.OperatorSettings:
    """kopf settings: our finalizer and annotation prefixes, events from `nexrl-operator`."""
    s = kopf.OperatorSettings()
    s.persistence.finalizer = f"{PREFIX}/finalizer"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    s.posting.reporting_component = "nexrl-operator"
    s.posting.event_name_prefix = "nexrl-operator-"
    return s


def run(argv: Sequence[str] | None = None) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM); returns the exit status."""
    args = parser().parse_args(list(argv) if argv is not None else None)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, handlers.Options(status_interval=args.status_interval))
    kopf.run(
        registry=registry,
        settings=settings(),
        standalone=args.peering is None,
        peering_name=args.peering,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
