"""`nexrl` command line: run a recipe locally (`nexrl run -c ...` or the NexRL-docs form
`nexrl -m self-hosted -c recipe.yaml --run-nexrl [overrides]`), or serve its trainer over HTTP
(`nexrl serve-trainer -c ... --port 8000`, the trainer pods of training-service mode)."""

from __future__ import annotations

import argparse
import sys

from nexrl_runtime.config.loader import ConfigError, load_config


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", required=True, help="recipe YAML (Hydra), e.g. recipe/arithmetic/arithmetic.yaml"
    )
    p.add_argument("--cluster", help="cluster section YAML written by the operator (cluster.yaml)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. total_steps=50 trainer.optim.lr=1e-4")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nexrl", description="NexRL: reinforcement learning for LLMs and agents"
    )
    sub = ap.add_subparsers(dest="command")
    _run_args(sub.add_parser("run", help="run a recipe"))
    serve = sub.add_parser("serve-trainer", help="serve the recipe's policy + optimizer over HTTP")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed on stdout)")
    serve.add_argument("--device", default="auto", help="torch device (auto: cuda if available, else cpu)")
    _run_args(serve)
    export = sub.add_parser("export", help="write a checkpoint's policy as an HF folder (for vLLM)")
    export.add_argument("checkpoint", help="a checkpoint folder (global_step_N)")
    export.add_argument("out", help="the HF folder to write")
    return ap


def legacy_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nexrl", description="nexrl -m MODE -c RECIPE --run-nexrl [overrides]")
    ap.add_argument("-m", "--mode", choices=["self-hosted", "training-service"], default="self-hosted")
    ap.add_argument("--run-nexrl", action="store_true", required=True, help="run the recipe")
    _run_args(ap)
    return ap


def run(config_path: str, overrides: list[str], cluster: str | None) -> int:
    """Check the config first (exit 2 with `nexrl: <field>: ...` before torch is even imported:
    in a cluster, a RayJob that fails within seconds), then run it; what the modules refuse while
    they are built (a model folder, a data file, a class spec) is a ConfigError too, said the same way."""
    try:
        config = load_config(config_path, overrides, cluster)
        from nexrl_runtime.launch import run_recipe  # heavy imports (torch) only when running

        summary = run_recipe(config)
    except ConfigError as err:  # RegistryError and DataError are ConfigErrors
        return _refuse(cluster, err)
    except Exception as err:  # a run stopped by its error policy
        from nexrl_runtime.errors import RunStopped

        if isinstance(err, RunStopped):
            print(f"nexrl: run stopped: {err}", file=sys.stderr)
            return 1
        raise
    before = summary.val_after_warm_start.get("val_accuracy")
    after = summary.val_final.get("val_accuracy")
    if before is not None:
        print(f"held-out accuracy after warm start: {before:.3f}")
    if after is not None:
        print(f"held-out accuracy after RL ({summary.steps} steps): {after:.3f}")
    print(f"run folder: {summary.output_dir} ({summary.seconds:.0f} s); {summary.stats}")
    return 130 if summary.interrupted else 0


def _refuse(cluster: str | None, err: ConfigError) -> int:
    """`nexrl: <field>: ...` on stderr (on the NexRLJob too, in a pod), exit status 2."""
    print(f"nexrl: {err}", file=sys.stderr)
    _tell_the_operator(cluster, str(err))
    return 2


def _tell_the_operator(cluster: str | None, message: str) -> None:
    """In a job's pod, put the refusal on the NexRLJob (status.configError): the operator then fails
    the job with ValidationFailed rather than restarting it with the same config."""
    if cluster is None:
        return
    from nexrl_runtime.config.loader import load_cluster
    from nexrl_runtime.reporting import ApiAccess, report_config_error

    try:
        section = load_cluster(cluster)
    except ConfigError:
        return  # the message printed above already names what is wrong
    if report_config_error(section, message, ApiAccess.in_cluster()):
        print("nexrl: reported on the NexRLJob (status.configError)", file=sys.stderr)


def export(checkpoint: str, out: str) -> int:
    """`nexrl export CKPT OUT`: the policy of a complete checkpoint as an HF folder."""
    from nexrl_runtime.checkpoint import export_hf  # torch, only for this command

    try:
        print(export_hf(checkpoint, out))
    except ValueError as err:
        print(f"nexrl export: {err}", file=sys.stderr)
        return 2
    return 0


def serve_trainer(args: argparse.Namespace) -> int:
    """`nexrl serve-trainer`: the training service of training-service mode (see trainer_service/)."""
    try:
        config = load_config(args.config, args.overrides, args.cluster)
        from nexrl_runtime.trainer_service import server  # heavy imports only when serving

        return server.main(config, args.host, args.port, args.device)
    except ConfigError as err:
        return _refuse(args.cluster, err)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--run-nexrl" in argv:
        args = legacy_parser().parse_args(argv)
        return run(args.config, [f"++mode={args.mode}", *args.overrides], args.cluster)
    args = parser().parse_args(argv)  # --help prints and exits 0; an unknown command exits 2
    if args.command == "run":
        return run(args.config, args.overrides, args.cluster)
    if args.command == "serve-trainer":
        return serve_trainer(args)
    if args.command == "export":
        return export(args.checkpoint, args.out)
    parser().print_help(sys.stderr)  # no command: a usage error
    return 2


if __name__ == "__main__":
    sys.exit(main())
