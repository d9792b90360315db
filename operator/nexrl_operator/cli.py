"""`nexrl-operator`: `crds` prints the CRD, `render` prints a job's children, `run` starts the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import main as main_module  # imports kopf only inside run()
from . import yamlio
from .api import KIND
from .builders import NO_DEFAULTS, OperatorDefaults, build_children
from .crdgen import CRDS, crd_yaml
from .spec_checks import JobValidationError, parse_job

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexrl-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    crds = sub.add_parser("crds", help="print (or write) the NexRLJob and NexRLQuota CRDs")
    crds.add_argument("-o", "--output", type=Path,
                      help="write one file per CRD into this folder (e.g. crds/) instead of stdout")
    render = sub.add_parser("render", help="print the children of NexRLJob(s) without a cluster")
    render.add_argument("-f", "--filename", required=True, help="NexRLJob YAML file ('-' for stdin)")
    render.add_argument("-n", "--namespace", help="default: metadata.namespace, else 'default'")
    render.add_argument("--uid", default=PLACEHOLDER_UID, help="owner uid written into ownerReferences")
    render.add_argument("--default-image", metavar="IMAGE",
                        help="runtime image of jobs without spec.image, as `run --default-image` "
                             "(default: none, spec.image is required)")
    render.add_argument("--default-inference-image", metavar="IMAGE",
                        help="vLLM image of jobs without spec.inference.image, as in `run`")
    main_module.add_arguments(sub.add_parser("run", help="run the operator (kopf)"))
    return parser


def _crds(output: Path | None) -> int:
    if output is None:
        sys.stdout.write("---\n".join(crd_yaml(info) for info in CRDS))
        return 0
    if output.suffix in (".yaml", ".yml"):
        print(f"error: -o takes a folder (it writes {', '.join(i.filename for i in CRDS)})", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    for info in CRDS:
        (output / info.filename).write_text(crd_yaml(info))
    return 0


def _render(filename: str, namespace: str | None, uid: str, defaults: OperatorDefaults = NO_DEFAULTS) -> int:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    children = []
    for doc in yamlio.load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            print(f"error: {filename}: expected kind {KIND}, got {doc.get('kind')!r}", file=sys.stderr)
            return 2
        meta = doc.get("metadata") or {}
        name = meta.get("name", "")
        try:
            job = parse_job(doc, default_image=defaults.image)
            ns = namespace or meta.get("namespace") or "default"
            children += build_children(job, name=name, namespace=ns, uid=uid, defaults=defaults)
        except JobValidationError as exc:
            for error in exc.errors:
                print(f"error: {KIND} {name!r}: {error}", file=sys.stderr)
            return 1
    sys.stdout.write(yamlio.dump_all(children))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nexrl-operator` script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "crds":
        return _crds(args.output)
    if args.command == "render":
        defaults = OperatorDefaults(image=args.default_image or None,
                                    inference_image=args.default_inference_image or None)
        return _render(args.filename, args.namespace, args.uid, defaults)
    return int(main_module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
