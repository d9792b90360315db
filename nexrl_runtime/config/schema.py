"""Pydantic models of a recipe after Hydra composition: the one place a config is validated.

Every model forbids unknown keys, so a typo fails before anything starts with its dotted path.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from nexrl_runtime.contract import ClusterConfig, Strict


class ModelConfig(Strict):
    """The policy. `kind: tiny` builds a small causal LM from `arch` with an in-process tokenizer;
    `kind: hf` loads a local HF folder (no hub access at run time)."""

    kind: Literal["tiny", "hf"] = "tiny"
    path: str | None = None
    vocab: str = Field("0123456789+-*=", description="tiny only: the characters of the char tokenizer")
    arch: Literal["gpt2", "llama"] = "gpt2"
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    max_positions: int = Field(64, ge=8)
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.kind == "hf" and not self.path:
            raise ValueError("model.path is required when model.kind is 'hf' (a local model folder)")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"model.device={self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads={self.num_heads}"
            )
        return self


class DataConfig(Strict):
    """A JSONL or parquet file of items; each item is rolled out `rollout_repeat_n` times as a group."""

    path: str
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    prompt_key: str = "prompt"
    batch_size: int = Field(16, ge=1, description="items (groups) per rollout batch")
    rollout_repeat_n: int = Field(8, ge=1, description="samples per item (GRPO group size)")
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = True
    limit: int | None = Field(None, ge=1, description="use only the first N items")
    too_long: Literal["filter", "error"] = Field(
        "filter",
        description="a prompt leaving no room under rollout.max_sequence_length: dropped at load "
        "(counted as filtered_too_long) or an error naming the item",
    )


class SamplingConfig(Strict):
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(16, ge=1)


class RolloutConfig(Strict):
    worker: str = Field("default", description="registry name or 'module_path:ClassName'")
    num_workers: int = Field(2, ge=1)
    evaluator: str = Field(..., description="'evaluator.py:ClassName', resolved against the recipe folder")
    max_sequence_length: int = Field(64, ge=2, description="prompt + response tokens; longer is truncated")
    sampling: SamplingConfig = SamplingConfig()
    agent_config: str = Field(
        "agent_workspace/agent_config.yaml",
        description="worker=agent: the agent config file (docs/agents.md), relative to the recipe folder",
    )
    _recipe_dir: str = PrivateAttr(".")  # set by NexRLConfig: where agent_config and tools resolve

    @property
    def recipe_dir(self) -> str:
        return self._recipe_dir


class PoolConfig(Strict):
    grouping: Literal["none", "key", "hierarchical"] = "key"
    group_keys: list[str] = Field(default_factory=lambda: ["group_id"], validate_default=True)
    batch_ready: Literal["batch_size_reached", "loaded_batch_finished"] = "batch_size_reached"
    batch_size: int | None = Field(
        None, ge=1, description="trajectories per train batch; default data.batch_size * rollout_repeat_n"
    )

    @field_validator("group_keys")
    @classmethod
    def _enough_keys(cls, keys: list[str], info: ValidationInfo) -> list[str]:
        grouping = info.data.get("grouping", "key")
        least = {"none": 0, "key": 1, "hierarchical": 2}.get(grouping, 0)
        if len(keys) < least:
            raise ValueError(f"pool.grouping={grouping!r} needs at least {least} key(s) (got {keys})")
        return keys


class GRPOConfig(Strict):
    scale_rewards: Literal["group", "batch", "none"] = "group"
    clip_low: float = Field(0.2, ge=0.0)
    clip_high: float = Field(0.28, ge=0.0)
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.0, ge=0.0)


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0.0)


class FSDPConfig(Strict):
    """How a trainer rank group shards the policy (FSDP2; used when the trainer has more than one rank)."""

    mixed_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: bf16 params/compute, fp32 master weights and gradient reduction"
    )
    activation_checkpointing: bool = Field(False, description="recompute block activations in backward")
    reshard_after_forward: bool = Field(True, description="free gathered params after forward (ZeRO-3)")


class LRScheduleConfig(Strict):
    """The learning rate per optimizer step: `optim.lr` x a factor (trainer/schedule.py). A plain
    string (`trainer.lr_schedule: cosine`) is short for `{kind: cosine}`."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="optimizer steps ramping linearly up to optim.lr")
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="linear/cosine: optimizer steps after warmup down to min_lr_ratio; null: "
        "total_steps x ppo_epochs x mini-batches per train batch, less warmup_steps",
    )
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="the lr after decay, as a fraction of optim.lr"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"kind": data} if isinstance(data, str) else data


class TrainerConfig(Strict):
    type: str = Field("grpo", description="registry name ('grpo', 'sft') or 'module_path:ClassName'")
    optim: OptimConfig = OptimConfig()
    lr_schedule: LRScheduleConfig = LRScheduleConfig()
    grpo: GRPOConfig = GRPOConfig()
    mini_batch_size: int | None = Field(None, ge=1, description="trajectories per optimizer step")
    micro_batch_size: int | None = Field(None, ge=1, description="trajectories per forward (grad accum)")
    ppo_epochs: int = Field(1, ge=1)
    recompute_old_logprobs: bool = Field(
        False,
        description="PPO ratio against the trainer's own logprobs of the batch (computed before the "
        "update) instead of the sampler's",
    )
    fsdp: FSDPConfig = FSDPConfig()

    def optimizer_steps_per_batch(self, batch_size: int) -> int:
        """Optimizer steps one train_step of `batch_size` trajectories takes."""
        mini = self.mini_batch_size or batch_size
        return self.ppo_epochs * -(-batch_size // mini)


class WarmStartConfig(Strict):
    """Optional supervised warm start (cross-entropy on `answer_key`) before RL."""

    steps: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    answer_key: str = "answer"


class WeightSyncConfig(Strict):
    mode: Literal["sync", "batch-async", "fully-async"] = "sync"
    staleness: int = Field(1, ge=0, description="max versions a trained-on trajectory may lag")
    on_stale: Literal["drop", "reroll"] = "drop"
    push_every: int = Field(1, ge=1, description="push weights every N train steps")

    @model_validator(mode="after")
    def _check(self) -> WeightSyncConfig:
        if self.mode == "sync" and self.staleness != 0:
            # sync means rollouts always see the latest weights: the bound is 0 by construction.
            object.__setattr__(self, "staleness", 0)
        return self


class VLLMServerConfig(Strict):
    """`vllm serve` arguments for `inference.engine: vllm` (servers started by the runtime)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="first replica's port; 0: free ports")
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(2048, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    extra_args: list[str] = Field(default_factory=list, description="more `vllm serve` flags")
    env: dict[str, str] = Field(default_factory=dict, description="e.g. VLLM_CPU_KVCACHE_SPACE: '1'")
    startup_timeout_s: float = Field(600.0, gt=0.0)


class InferenceConfig(Strict):
    """Which engine rollouts use: `local` (in-process torch), `openai` (running OpenAI-compatible
    servers at `base_urls`, else `cluster.inference.base_urls`), or `vllm` (servers started here)."""

    engine: Literal["local", "openai", "vllm"] = "local"
    base_urls: list[str] = Field(default_factory=list)
    replicas: int = Field(1, ge=1, description="vllm: servers to start (one client balances them)")
    served_model_name: str | None = Field(None, description="default: the first of GET /v1/models")
    balance: Literal["least-outstanding", "round-robin"] = "least-outstanding"
    timeout_s: float = Field(300.0, gt=0.0, description="per HTTP request")
    max_retries: int = Field(3, ge=0, description="on connection errors and 5xx")
    weight_sync: Literal["disk", "nccl", "none"] = Field(
        "disk", description="disk: safetensors + reload_weights; nccl: vLLM's weight-transfer engine"
    )
    weights_dir: str | None = Field(None, description="disk route folder; default <output_dir>/weights")
    nccl_master: str | None = Field(None, description="nccl route: 'host:port' the trainer listens on")
    ready_timeout_s: float = Field(
        900.0, gt=0.0, description="launch_mode=ray: wait this long at start for the replicas to be ready"
    )
    refresh_s: float = Field(
        2.0, gt=0.0, description="launch_mode=ray: re-resolve and re-check the replicas this often"
    )
    server: VLLMServerConfig = VLLMServerConfig()


class ValidationConfig(Strict):
    path: str | None = None
    every: int = Field(10, ge=1, description="validate every N steps (and at the end)")
    limit: int | None = Field(None, ge=1)
    greedy: bool = True


class LoggingConfig(Strict):
    console_every: int = Field(1, ge=1)
    progress_bar: bool = True
    plot: bool = True
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics on this port (0: a free one); null: off"
    )
    metrics_host: str = "0.0.0.0"
    status_every_s: float = Field(
        10.0, ge=0.0, description="in a job's pod: patch the NexRLJob's step/reward at most this often"
    )
    backends: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="where step metrics go; metrics.jsonl is always written (resume and curves read it)",
    )
    project: str = Field("nexrl", description="the W&B project / MLflow experiment of the run")
    wandb_mode: Literal["online", "offline"] | None = Field(
        None, description="W&B's mode; null: W&B's own default ($WANDB_MODE, else online)"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="null: $MLFLOW_TRACKING_URI, else a file store in <output_dir>/mlruns"
    )


class ErrorsConfig(Strict):
    """What a failing sample (evaluator, rollout, inference past its retries) or a non-finite
    loss/gradient does: `continue` drops the sample's whole group and counts it (`errors_<kind>`),
    `stop` ends the run naming the item. The caps stop a `continue` run once exceeded."""

    policy: Literal["stop", "continue"] = "stop"
    max_consecutive: int | None = Field(None, ge=0, description="failed samples in a row; null: no cap")
    max_total: int | None = Field(None, ge=0, description="failed samples in the run; null: no cap")
    on_nonfinite: Literal["skip", "stop"] = Field(
        "skip", description="NaN/inf loss or gradient norm: skip that update (counted) or stop the run"
    )


RayRoleName = Literal["trainer", "rollout", "engine", "validator"]


class RayRole(Strict):
    """What one actor of a role asks Ray for; a colocation group's actor asks the sum of its roles."""

    num_cpus: float | None = Field(None, ge=0.0, description="default: trainer 1, rollout 0.5, others 0")
    num_gpus: float = Field(0.0, ge=0.0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources")

    @model_validator(mode="after")
    def _check(self) -> RayRole:
        builtin = {"CPU", "GPU", "memory", "object_store_memory"} & set(self.resources)
        if builtin:
            raise ValueError(f"resources may not name {sorted(builtin)}: use num_cpus / num_gpus")
        return self


class RayConfig(Strict):
    """`launch_mode: ray`: where Ray is, what each role's actors ask for, how actors are grouped
    and supervised. In-cluster, the trainer's GPUs come from `cluster.trainer` (the pod limits)."""

    address: str | None = Field(None, description="else $RAY_ADDRESS, else cluster.ray_address, else local")
    num_cpus: int | None = Field(None, ge=1, description="local start only")
    num_gpus: int | None = Field(None, ge=0, description="local start only")
    resources: dict[str, float] = Field(default_factory=dict, description="local start only")
    trainer: RayRole = RayRole()
    rollout: RayRole = RayRole()
    engine: RayRole = RayRole()
    validator: RayRole = RayRole()
    engine_replicas: int | None = Field(
        None, ge=1, description="default: one per rollout worker when colocated with rollout, else 1"
    )
    trainer_ranks: int = Field(
        1, ge=1, description="trainer actors, one FSDP2 rank each (in a cluster: trainer nodes x GPUs/node)"
    )
    colocate: dict[str, list[RayRoleName]] = Field(
        default_factory=lambda: {"rollout": ["rollout", "engine"], "trainer": ["trainer", "validator"]},
        description="colocation groups: the roles listed share one actor (per instance)",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_restarts: int = Field(3, ge=0, description="restarts of dead rollout/engine/validator actors")
    trainer_failure: Literal["fail", "restart-from-checkpoint"] = "fail"
    checkpoint_every: int = Field(1, ge=1, description="trainer checkpoints (restart-from-checkpoint)")
    ready_timeout_s: float = Field(300.0, gt=0.0, description="wait for actors / placement groups")
    call_timeout_s: float | None = Field(
        1800.0, gt=0.0,
        description="a rollout/validator/engine actor that has not answered a call after this long is "
        "reported hung, replaced, and the call retried (null: wait forever); the trainer is never timed out",
    )

    @model_validator(mode="after")
    def _check(self) -> RayConfig:
        seen: dict[str, str] = {}
        for group, roles in self.colocate.items():
            for role in roles:
                if role in seen:
                    raise ValueError(f"role {role!r} is in colocation groups {seen[role]!r} and {group!r}")
                seen[role] = group
        return self


class KeepBestConfig(Strict):
    """Keep the checkpoint with the best value of `metric` (a metrics.jsonl key of the save step)."""

    metric: str = Field(..., description="e.g. val_accuracy or reward_mean")
    mode: Literal["max", "min"] = "max"


class CheckpointConfig(Strict):
    """Full-run checkpoints (`<dir>/global_step_N`, written atomically; see docs/checkpoints.md)."""

    every: int | None = Field(None, ge=1, description="save every N RL steps (and at the last); None: never")
    keep_last: int | None = Field(None, ge=1, description="keep the newest N complete checkpoints; None: all")
    keep_best: KeepBestConfig | None = Field(None, description="also keep the best one by a metric")
    dir: str | None = Field(None, description="default <output_dir>/checkpoints")
    export_hf: bool = Field(False, description="also write an HF folder (hf/) of the policy on every save")


class ResumeConfig(Strict):
    """`auto`: the latest complete checkpoint under checkpoint.dir (a fresh start if none);
    `from_path`: the checkpoint folder at `path` (must come from the same config)."""

    mode: Literal["disable", "auto", "from_path"] = "disable"
    path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ResumeConfig:
        if self.mode == "from_path" and not self.path:
            raise ValueError("resume.path is required when resume.mode is 'from_path' (a checkpoint folder)")
        return self


class NexRLConfig(Strict):
    """A whole recipe."""

    run_name: str = "nexrl"
    seed: int = 0
    mode: Literal["self-hosted", "training-service"] = "self-hosted"
    launch_mode: Literal["local", "ray"] = "local"
    recipe_dir: str = Field(".", description="set by the loader: the recipe file's folder")
    output_dir: str = "runs/nexrl"
    total_steps: int = Field(100, ge=1)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: all cores)")
    model: ModelConfig = ModelConfig()
    data: DataConfig
    rollout: RolloutConfig
    pool: PoolConfig = PoolConfig()
    trainer: TrainerConfig = TrainerConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    validation: ValidationConfig = ValidationConfig()
    logging: LoggingConfig = LoggingConfig()
    errors: ErrorsConfig = ErrorsConfig()
    inference: InferenceConfig = InferenceConfig()
    cluster: ClusterConfig = ClusterConfig()
    ray: RayConfig = RayConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    resume: ResumeConfig = ResumeConfig()

    @model_validator(mode="after")
    def _derive_decay_steps(self) -> NexRLConfig:
        """A decaying lr schedule without decay_steps decays over the whole run (an estimate in
        optimizer steps: batches made smaller by dropped groups take fewer)."""
        sched = self.trainer.lr_schedule
        if sched.kind != "constant" and sched.decay_steps is None:
            steps = self.total_steps * self.trainer.optimizer_steps_per_batch(self.train_batch_size)
            decay = max(steps - sched.warmup_steps, 1)
            self.trainer.lr_schedule = sched.model_copy(update={"decay_steps": decay})
        return self

    @model_validator(mode="after")
    def _share_recipe_dir(self) -> NexRLConfig:
        self.rollout._recipe_dir = self.recipe_dir  # the agent worker gets only the rollout section
        return self

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or f"{self.output_dir}/checkpoints"

    @property
    def train_batch_size(self) -> int:
        return self.pool.batch_size or self.data.batch_size * self.data.rollout_repeat_n
