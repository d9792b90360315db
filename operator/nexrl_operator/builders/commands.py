"""The command lines the pods run: `nexrl run` (Ray head), `nexrl serve-trainer`, `vllm serve`."""

from __future__ import annotations

from ..api import NexRLJobSpec
from .common import CONFIG_DIR, HTTP_PORT, Context

CLUSTER_FILE = f"{CONFIG_DIR}/cluster.yaml"
INLINE_CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"


def config_path(ctx: Context) -> str:
    """The recipe the runtime loads: the image path in spec.recipe, or the mounted inline config."""
    return ctx.spec.recipe or INLINE_CONFIG_FILE


def spec_overrides(spec: NexRLJobSpec, name: str) -> list[str]:
    """Hydra overrides derived from the spec of job `name` (`++` adds or replaces), applied before
    the user's (spec_checks applies them too, to check an inline recipe as the runtime will)."""
    out = [f"++mode={spec.mode}", "++launch_mode=ray"]
    if spec.model is not None and spec.model.path:
        out += ["++model.kind=hf", f"++model.path={spec.model.path}"]
    if spec.storage is not None:
        out.append(f"++output_dir={spec.storage.mount_path.rstrip('/')}/{name}")
    return out


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
