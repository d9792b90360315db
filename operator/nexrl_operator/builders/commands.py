"""The command lines the pods run: `nexrl run` (Ray head), `nexrl serve-trainer`, `vllm serve`."""

from __future__ import annotations

from ..api import NexRLJobSpec
from .common import CONFIG_DIR, HTTP_PORT, METRICS_PORT, Context

CLUSTER_FILE = f"{CONFIG_DIR}/cluster.yaml"
INLINE_CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"


def config_path(ctx: Context) -> str:
    """The recipe the runtime loads: the image path in spec.recipe, or the mounted inline config."""
    return ctx.spec.recipe or INLINE_CONFIG_FILE


def operator_settings(spec: NexRLJobSpec, name: str) -> dict[str, tuple[str, str]]:
    """Config key -> (the value the operator gives it in job `name`, why: which spec field decides
    it, in words). spec.overrides may not set these keys (spec_checks says so, naming the field)."""
    out = {"mode": (spec.mode, "from spec.mode"),
           "launch_mode": ("ray", "to ray (the job runs on its Ray cluster)"),
           "logging.metrics_port": (str(METRICS_PORT), f"to {METRICS_PORT} (the head pod's metrics port)")}
    if spec.model is not None and spec.model.path:
        out["model.kind"] = ("hf", "to hf from spec.model.path (the folder vLLM serves too)")
        out["model.path"] = (spec.model.path, "from spec.model.path (the folder vLLM serves too)")
    root = f"{spec.storage.mount_path.rstrip('/')}/{name}" if spec.storage is not None else None
    if root is not None:
        out["output_dir"] = (root, f"to {root} (the job's folder on spec.storage)")
    if spec.inference.replicas > 0:
        why = "when spec.inference.replicas > 0 (rollouts use the job's vLLM replicas"
        out["inference.engine"] = ("openai", f"to openai {why} over HTTP)")
        out["inference.base_urls"] = ("[]", f"to [] {why}, found through cluster.inference.base_urls)")
        if root is not None:
            weights = f"{root}/weights"
            out["inference.weights_dir"] = (weights, f"to {weights} on spec.storage, which the vLLM pods "
                                            "mount (the disk weight route writes there)")
    return out


def spec_overrides(spec: NexRLJobSpec, name: str) -> list[str]:
    """Hydra overrides derived from the spec of job `name` (`++` adds or replaces), applied before
    the user's (spec_checks applies them too, to check an inline recipe as the runtime will)."""
    return [f"++{key}={value}" for key, (value, _) in operator_settings(spec, name).items()]


def operator_overrides(ctx: Context) -> list[str]:
    """The operator's Hydra overrides of this job (`spec_overrides`)."""
    return spec_overrides(ctx.spec, ctx.name)


def all_overrides(ctx: Context) -> list[str]:
    """Operator overrides, then the user's spec.overrides (validation keeps them from clashing)."""
    return operator_overrides(ctx) + list(ctx.spec.overrides)


def nexrl_command(ctx: Context, subcommand: str, *options: str) -> list[str]:
    """`nexrl <subcommand> -c <recipe> --cluster /etc/nexrl/cluster.yaml [options] <overrides>`."""
    return [
        "nexrl",
        subcommand,
        "-c",
        config_path(ctx),
        "--cluster",
        CLUSTER_FILE,
        *options,
        *all_overrides(ctx),
    ]


def run_command(ctx: Context) -> list[str]:
    """The controller, run as the Ray job's entrypoint on the head."""
    return nexrl_command(ctx, "run")


def serve_trainer_command(ctx: Context) -> list[str]:
    """The trainer service of training-service mode: one rank runs `nexrl serve-trainer`; more run it
    under torchrun, NPROC_PER_NODE ranks per pod, rendezvous at rank 0's pod (MASTER_ADDR/PORT and
    NODE_RANK come from the container env; Kubernetes expands `$(VAR)` in commands)."""
    command = nexrl_command(ctx, "serve-trainer", "--port", str(HTTP_PORT))
    trainer = ctx.spec.trainer
    if trainer.nodes * max(trainer.gpus_per_node, 1) <= 1:
        return command
    return [
        "torchrun",
        f"--nnodes={trainer.nodes}",
        f"--nproc_per_node={max(trainer.gpus_per_node, 1)}",
        "--node_rank=$(NODE_RANK)",
        "--master_addr=$(MASTER_ADDR)",
        "--master_port=$(MASTER_PORT)",
        "--no-python",
        *command,
    ]


def model_source(ctx: Context) -> str:
    """What vLLM loads: the local path when given, else the model name."""
    model = ctx.spec.model
    assert model is not None, "validation requires spec.model when inference replicas > 0"
    return model.path or model.name


def vllm_command(ctx: Context) -> list[str]:
    """`vllm serve` as an OpenAI-compatible server; answers to both the model name and its path."""
    inference, source = ctx.spec.inference, model_source(ctx)
    name = ctx.spec.model.name if ctx.spec.model else source
    served = [name] + ([source] if source != name else [])
    return [
        "vllm",
        "serve",
        source,
        "--served-model-name",
        *served,
        "--tensor-parallel-size",
        str(max(inference.gpus_per_replica, 1)),  # a CPU replica (0 GPUs) is one process
        "--host",
        "0.0.0.0",
        "--port",
        str(HTTP_PORT),
        *inference.args,
    ]
