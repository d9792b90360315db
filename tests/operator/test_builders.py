"""Builders: every child schema-valid, owned, labelled, scheduled, and GPU counts without drift."""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nexrl_operator.api import GPU_RESOURCE, NexRLJob, total_gpus
from nexrl_operator.builders import OperatorDefaults, build_children
from nexrl_operator.spec_checks import JobValidationError, parse_job, validate_job

from nexrl_runtime.contract import ClusterConfig

Manifest = dict[str, Any]
MakeJob = Callable[..., NexRLJob]
Validate = Callable[[Manifest], None]
UID = "3f1c2d4e-0000-4000-8000-000000000001"
MODEL = {"name": "Qwen/Qwen2.5-1.5B-Instruct", "path": "/data/models/qwen"}


def build(job: NexRLJob, name: str = "demo", namespace: str = "ml") -> list[Manifest]:
    return build_children(job, name=name, namespace=namespace, uid=UID)


def by_kind(children: list[Manifest]) -> dict[str, list[Manifest]]:
    out: dict[str, list[Manifest]] = {}
    for child in children:
        out.setdefault(child["kind"], []).append(child)
    return out


def one(children: list[Manifest], kind: str) -> Manifest:
    (child,) = by_kind(children)[kind]
    return child


def pod_templates(children: list[Manifest]) -> Iterator[tuple[str, int, Manifest]]:
    """(where, replicas, pod template) of every pod the children will create."""
    for child in children:
        spec = child.get("spec", {})
        if child["kind"] in ("Deployment", "StatefulSet"):
            yield child["kind"], spec["replicas"], spec["template"]
        elif child["kind"] == "RayJob":
            yield "submitter", 1, spec["submitterPodTemplate"]
            yield "head", 1, spec["rayClusterSpec"]["headGroupSpec"]["template"]
            for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
                yield group["groupName"], group["replicas"], group["template"]


def gpus(template: Manifest) -> int:
    return sum(
        int(c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))
        for c in template["spec"]["containers"]
    )


def cluster_section(children: list[Manifest]) -> ClusterConfig:
    return ClusterConfig.model_validate(yaml.safe_load(one(children, "ConfigMap")["data"]["cluster.yaml"]))


def validate_all(children: list[Manifest], validate_manifest: Validate) -> None:
    """Each child, the RayJob's embedded RayCluster, and every pod template as a core PodTemplate."""
    for child in children:
        validate_manifest(child)
        if child["kind"] == "RayJob":
            meta = {"name": child["metadata"]["name"] + "-abcde", "namespace": child["metadata"]["namespace"]}
            cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta}
            validate_manifest({**cluster, "spec": child["spec"]["rayClusterSpec"]})
    for where, _, template in pod_templates(children):
        validate_manifest(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": where}, "template": template}
        )


def test_examples_build_valid_children(example: Manifest, validate_manifest: Validate):
    validate_manifest(example)
    job = parse_job(example)
    validate_all(build(job, name=example["metadata"]["name"]), validate_manifest)


@pytest.mark.parametrize("kind", ["RayJob", "Deployment", "ConfigMap"])
def test_validators_catch_unknown_fields(kind: str, make_job: MakeJob, validate_manifest: Validate):
    child = copy.deepcopy(one(build(make_job(model=MODEL)), kind))
    child.setdefault("spec", {})["tensorParallel"] = 2
    with pytest.raises(AssertionError):
        validate_manifest(child)


FULL = {
    "mode": "training-service",
    "model": MODEL,
    "inference": {"replicas": 2, "gpusPerReplica": 2, "args": ["--max-model-len", "4096"]},
    "trainer": {"nodes": 1, "gpusPerNode": 1, "resources": {"requests": {"cpu": 8, "memory": "64Gi"}}},
    "rollout": {"workers": 3},
    "storage": {"size": "100Gi", "storageClassName": "rwx"},
    "scheduling": {
        "queueName": "team-a",
        "priorityClassName": "high",
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "ttlSecondsAfterFinished": 600,
}


@pytest.fixture
def full(make_job: MakeJob) -> list[Manifest]:
    return build(make_job(**FULL))


def test_full_job_children_kinds_and_order(full: list[Manifest], validate_manifest: Validate):
    assert [(c["kind"], c["metadata"]["name"]) for c in full] == [
        ("ConfigMap", "demo-config"),
        ("PersistentVolumeClaim", "demo-data"),
        ("Service", "demo-inference"),
        ("Deployment", "demo-inference"),
        ("Service", "demo-trainer"),
        ("StatefulSet", "demo-trainer"),
        ("RayJob", "demo"),
    ]
    validate_all(full, validate_manifest)


def test_every_child_is_owned_labelled_and_namespaced(full: list[Manifest]):
    for child in full:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "nexrl.io/v1alpha1",
                "kind": "NexRLJob",
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "nexrl"
        assert labels["app.kubernetes.io/instance"] == labels["nexrl.io/job"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "nexrl-operator"
        assert labels["app.kubernetes.io/component"]
        workload = child["kind"] in ("RayJob", "Deployment", "StatefulSet")
        assert (labels.get("kueue.x-k8s.io/queue-name") == "team-a") is workload


def test_kueue_gets_the_vllm_pods_as_one_pod_group(full: list[Manifest], make_job: MakeJob):
    deployment = next(c for c in full if c["kind"] == "Deployment")
    meta = deployment["spec"]["template"]["metadata"]
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert meta["labels"]["kueue.x-k8s.io/pod-group-name"] == "demo-inference"
    assert meta["annotations"] == {"kueue.x-k8s.io/pod-group-total-count": "2"}
    # The StatefulSet is Kueue's own statefulset integration (it groups the pods itself); without a
    # queue there are no Kueue labels at all.
    statefulset = next(c for c in full if c["kind"] == "StatefulSet")
    assert "kueue.x-k8s.io/pod-group-name" not in statefulset["spec"]["template"]["metadata"]["labels"]
    plain = next(c for c in build(make_job(model=MODEL)) if c["kind"] == "Deployment")
    assert not any(k.startswith("kueue") for k in plain["spec"]["template"]["metadata"]["labels"])
    assert "annotations" not in plain["spec"]["template"]["metadata"]


def test_every_pod_template_gets_scheduling_and_labels(full: list[Manifest]):
    templates = list(pod_templates(full))
    assert {where for where, _, _ in templates} == {
        "Deployment",
        "StatefulSet",
        "submitter",
        "head",
        "rollout",
    }
    for where, _, template in templates:
        spec = template["spec"]
        ray_pod = where in ("submitter", "head", "rollout", "trainer")
        assert ("app.kubernetes.io/name" in template["metadata"]["labels"]) is not ray_pod  # KubeRay's own
        assert spec["priorityClassName"] == "high"
        assert spec["nodeSelector"] == {"pool": "gpu"}
        assert spec["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert template["metadata"]["labels"]["nexrl.io/job"] == "demo"


def test_selectors_match_their_pod_templates(full: list[Manifest]):
    kinds = by_kind(full)
    for workload in kinds["Deployment"] + kinds["StatefulSet"]:
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        (service,) = [s for s in kinds["Service"] if s["metadata"]["name"] == workload["metadata"]["name"]]
        assert service["spec"]["selector"] == selector
    assert one(full, "StatefulSet")["spec"]["serviceName"] == "demo-trainer"


def test_configmap_cluster_section_addresses_and_counts(full: list[Manifest]):
    cluster = cluster_section(full)
    assert cluster.model_dump() == {
        "namespace": "ml",
        "job_name": "demo",
        "ray_address": "auto",
        "inference": {
            "base_urls": ["http://demo-inference.ml.svc:8000"],
            "replicas": 2,
            "gpus_per_replica": 2,
        },
        "trainer": {
            "nodes": 1,
            "gpus_per_node": 1,
            "base_url": "http://demo-trainer-0.demo-trainer.ml.svc:8000",
        },
        "rollout_workers": 3,
    }
    data = one(full, "ConfigMap")["data"]
    assert data["recipe"] == "/app/recipe/gsm8k/gsm8k.yaml" and "config.yaml" not in data


def test_inline_config_is_mounted_and_used(make_job: MakeJob):
    config = {"total_steps": 5, "data": {"path": "/d.jsonl"}, "rollout": {"evaluator": "ev.py:E"}}
    children = build(
        make_job(config=config, inference={"replicas": 0}, trainer={"nodes": 0, "gpusPerNode": 0})
    )
    data = one(children, "ConfigMap")["data"]
    assert yaml.safe_load(data["config.yaml"]) == config and "recipe" not in data
    argv = shlex.split(one(children, "RayJob")["spec"]["entrypoint"])
    assert argv[:6] == [
        "nexrl",
        "run",
        "-c",
        "/etc/nexrl/config.yaml",
        "--cluster",
        "/etc/nexrl/cluster.yaml",
    ]
    assert set(by_kind(children)) == {"ConfigMap", "RayJob"}
    assert cluster_section(children).inference.base_urls == []


def test_entrypoint_overrides_operator_first_then_user(make_job: MakeJob):
    job = make_job(
        model=MODEL, storage={"existingClaim": "shared"}, overrides=["total_steps=7", "data.x='a b'"]
    )
    children = build(job)
    argv = shlex.split(one(children, "RayJob")["spec"]["entrypoint"])
    overrides = [
        "++mode=self-hosted",
        "++launch_mode=ray",
        "++logging.metrics_port=9400",
        "++model.kind=hf",
        "++model.path=/data/models/qwen",
        "++output_dir=/data/demo",
        "++inference.engine=openai",  # the job's vLLM replicas, over HTTP
        "++inference.base_urls=[]",  # ... found through cluster.inference.base_urls
        "++inference.weights_dir=/data/demo/weights",  # on the storage the vLLM pods mount
        "total_steps=7",
        "data.x='a b'",
    ]
    assert argv == [
        "nexrl",
        "run",
        "-c",
        "/app/recipe/gsm8k/gsm8k.yaml",
        "--cluster",
        "/etc/nexrl/cluster.yaml",
        *overrides,
    ]
    assert one(children, "ConfigMap")["data"]["overrides"].splitlines() == overrides


def test_vllm_server(full: list[Manifest]):
    deployment = one(full, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["vllm", "serve", "/data/models/qwen"]
    command = " ".join(container["command"])
    assert "--served-model-name Qwen/Qwen2.5-1.5B-Instruct /data/models/qwen" in command
    assert "--tensor-parallel-size 2" in command and "--port 8000" in command
    assert command.endswith("--max-model-len 4096")
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in container["env"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    caches = {e["name"]: e["value"] for e in container["env"] if "CACHE" in e["name"]}
    assert caches == {  # on the claim the container mounts: a restarted replica reuses its compile caches
        "VLLM_CACHE_ROOT": f"{mounts['nexrl-data']}/.cache/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{mounts['nexrl-data']}/.cache/torchinductor",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    service = next(s for s in by_kind(full)["Service"] if s["metadata"]["name"] == "demo-inference")
    assert service["spec"]["ports"][0]["port"] == 8000



def test_vllm_caches_stay_in_the_pod_without_storage(make_job: MakeJob):
    job = make_job(model=MODEL, inference={"replicas": 1}, storage=None)
    (container,) = one(build(job), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [e for e in container["env"] if e["name"] in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")]

def test_training_service_pods(full: list[Manifest]):
    sts = one(full, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["nexrl", "serve-trainer"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MASTER_ADDR"] == "demo-trainer-0.demo-trainer.ml.svc" and env["NNODES"] == "1"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert container["command"][0] == "nexrl"  # one rank: no torchrun
    groups = one(full, "RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["rollout"]  # the trainer is not in Ray in this mode


def test_training_service_on_many_ranks_runs_under_torchrun(make_job: MakeJob):
    job = make_job(**{**FULL, "trainer": {"nodes": 2, "gpusPerNode": 4}})
    sts = one(build(job), "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:7] == [
        "torchrun", "--nnodes=2", "--nproc_per_node=4", "--node_rank=$(NODE_RANK)",
        "--master_addr=$(MASTER_ADDR)", "--master_port=$(MASTER_PORT)", "--no-python",
    ]  # fmt: skip
    assert command[7:9] == ["nexrl", "serve-trainer"]
    env = {e["name"]: e for e in container["env"]}
    # every $(VAR) the command names is defined in the container, so Kubernetes expands it
    assert {"NODE_RANK", "MASTER_ADDR", "MASTER_PORT"} <= env.keys()
    assert env["MASTER_ADDR"]["value"] == "demo-trainer-0.demo-trainer.ml.svc"
    assert sts["spec"]["replicas"] == 2
    assert validate_job(job.spec) == []  # the operator admits it now


@pytest.mark.parametrize(
    ("storage", "claim", "pvc"),
    [
        (None, None, False),
        ({"existingClaim": "shared"}, "shared", False),
        ({"size": "10Gi"}, "demo-data", True),
    ],
)
def test_storage_volume_on_every_pod(
    make_job: MakeJob, storage: Manifest | None, claim: str | None, pvc: bool
):
    children = build(make_job(model=MODEL, storage=storage))
    assert ("PersistentVolumeClaim" in by_kind(children)) is pvc
    for _, _, template in pod_templates(children):
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in template["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        ]
        if template["spec"].get("restartPolicy") == "Never":
            continue  # the submitter only talks to the Ray dashboard
        assert claims == ([claim] if claim else [])


def test_suspend_frees_every_gpu(make_job: MakeJob):
    children = build(make_job(**{**FULL, "suspend": True}))
    assert one(children, "RayJob")["spec"]["suspend"] is True
    assert one(children, "Deployment")["spec"]["replicas"] == 0
    assert one(children, "StatefulSet")["spec"]["replicas"] == 0
    assert (
        cluster_section(children).inference.replicas == 2
    )  # the runtime config still says what runs on resume


@pytest.mark.parametrize("mode", ["training-service", "self-hosted"])
def test_operator_defaults_service_account_and_vllm_image(make_job: MakeJob, mode: str):
    defaults = OperatorDefaults(service_account="nexrl-runtime", inference_image="vllm/vllm-openai:v1")

    def children(**spec: Any) -> list[Manifest]:
        job = make_job(**{**FULL, "mode": mode, **spec})
        return build_children(job, name="demo", namespace="ml", uid=UID, defaults=defaults)

    def vllm_image(built: list[Manifest]) -> str:
        return one(built, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]

    built = children()
    accounts = {where: t["spec"].get("serviceAccountName") for where, _, t in pod_templates(built)}
    runtime = {"head", "rollout", "StatefulSet" if mode == "training-service" else "trainer"}
    # Only the pods that run NexRL code get the account that may patch the job's status.
    assert accounts == {where: "nexrl-runtime" if where in runtime else None for where in accounts}
    assert vllm_image(built) == "vllm/vllm-openai:v1"
    assert vllm_image(children(inference={**FULL["inference"], "image": "mine:1"})) == "mine:1"
    plain = build(make_job(**{**FULL, "mode": mode}))
    assert all("serviceAccountName" not in t["spec"] for _, _, t in pod_templates(plain))
    assert vllm_image(plain) == "nexrl:test"


def test_default_runtime_image_for_jobs_without_spec_image(make_job: MakeJob):
    """Every NexRL container runs spec.image, else the operator's --default-image; vLLM falls back to it."""
    defaults = OperatorDefaults(image="registry.example.com/nexrl:0.1.0")

    def images(job: NexRLJob, with_defaults: OperatorDefaults = defaults) -> dict[str, str]:
        built = build_children(job, name="demo", namespace="ml", uid=UID, defaults=with_defaults)
        return {f"{where}/{c['name']}": c["image"] for where, _, t in pod_templates(built)
                for c in t["spec"]["containers"]}

    imageless = make_job(**{**FULL, "image": None})
    assert set(images(imageless).values()) == {"registry.example.com/nexrl:0.1.0"}
    assert set(images(make_job(**FULL)).values()) == {"nexrl:test"}  # spec.image wins
    vllm = OperatorDefaults(image="registry.example.com/nexrl:0.1.0", inference_image="vllm/vllm-openai:v1")
    assert {k: v for k, v in images(imageless, vllm).items() if v != vllm.image} == {
        "Deployment/vllm": "vllm/vllm-openai:v1"}
    with pytest.raises(JobValidationError, match=r"^spec\.image is required"):
        build(imageless)  # no default: refused, as at admission


def test_ttl_passthrough_and_shutdown(full: list[Manifest]):
    spec = one(full, "RayJob")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 600


def test_builders_are_pure_and_deterministic(make_job: MakeJob):
    job = make_job(**FULL)
    before = job.model_dump()
    first, second = build(job), build(job)
    assert first == second and job.model_dump() == before
    first[0]["data"]["cluster.yaml"] = "mutated"
    assert build(job)[0]["data"]["cluster.yaml"] != "mutated"


def test_invalid_spec_or_name_is_refused(make_job: MakeJob):
    with pytest.raises(JobValidationError, match=r"spec\.model"):
        build(make_job())
    with pytest.raises(JobValidationError, match=r"metadata\.name"):
        build(make_job(model=MODEL), name="x" * 45)


# --- GPU counts: pod limits and the runtime's cluster section come from the same fields ---------

specs = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["self-hosted", "training-service"]),
        "model": st.just(MODEL),
        "inference": st.fixed_dictionaries(
            {"replicas": st.integers(0, 4), "gpusPerReplica": st.integers(1, 8)}
        ),
        "trainer": st.fixed_dictionaries({"nodes": st.integers(0, 4), "gpusPerNode": st.integers(0, 8)}),
        "rollout": st.fixed_dictionaries({"workers": st.integers(0, 3)}),
        "suspend": st.booleans(),
    }
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=specs)
def test_gpu_counts_match_the_runtime_config(
    fields: Manifest, make_job: MakeJob, validate_manifest: Validate
):
    job = make_job(**fields)
    assume(not validate_job(job.spec))
    children = build(job)
    cluster = cluster_section(children)
    held = {where: (replicas, gpus(t)) for where, replicas, t in pod_templates(children)}
    scale = 0 if job.spec.suspend else 1

    inference = cluster.inference
    if inference.replicas:
        assert held["Deployment"] == (inference.replicas * scale, inference.gpus_per_replica)
        tp = one(children, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
        assert tp[tp.index("--tensor-parallel-size") + 1] == str(max(inference.gpus_per_replica, 1))
    else:
        assert "Deployment" not in held

    trainer = cluster.trainer
    trainer_pods = "StatefulSet" if job.spec.mode == "training-service" else "trainer"
    if trainer.nodes:
        replicas, per_pod = held[trainer_pods]
        assert replicas == trainer.nodes * (scale if trainer_pods == "StatefulSet" else 1)
        assert per_pod == trainer.gpus_per_node
    else:
        assert trainer_pods not in held
    assert cluster.rollout_workers == held.get("rollout", (0, 0))[0]

    if not job.spec.suspend:
        held_gpus = sum(n * g for n, g in held.values())
        assert (
            held_gpus
            == total_gpus(job.spec)
            == inference.replicas * inference.gpus_per_replica + (trainer.nodes * trainer.gpus_per_node)
        )
    validate_all(children, validate_manifest)


def test_the_head_pod_exposes_the_runtime_metrics_for_scraping(make_job: MakeJob):
    """The runtime serves /metrics on the head (`++logging.metrics_port`): a named containerPort and
    the scrape annotations say where; the chart's PodMonitor selects the head pods."""
    rayjob = one(build(make_job(model=MODEL)), "RayJob")
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    ports = head["spec"]["containers"][0]["ports"]
    assert ports == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert head["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9400", "prometheus.io/path": "/metrics"}
    assert head["metadata"]["labels"]["app.kubernetes.io/component"] == "head"
    assert "++logging.metrics_port=9400" in shlex.split(rayjob["spec"]["entrypoint"])
