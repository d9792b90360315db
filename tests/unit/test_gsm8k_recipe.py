"""The GSM8K recipe: answer extraction and reward, data preparation, and the recipe loading with the
overrides and cluster section the example NexRLJobs give it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from nexrl_operator.api import NexRLJob
from nexrl_operator.builders import build_children
from nexrl_operator.builders.configmap import CLUSTER_KEY, OVERRIDES_KEY

from nexrl_runtime.config import load_config
from nexrl_runtime.models.factory import char_tokenizer
from nexrl_runtime.registry import load_object, resolve_class
from nexrl_runtime.rollout import Evaluator

REPO = Path(__file__).resolve().parents[2]
RECIPE_DIR = REPO / "recipe" / "gsm8k"
IMAGE_RECIPE = "/app/recipe/gsm8k/gsm8k.yaml"  # where the Dockerfile puts it
EXAMPLES = [p for p in sorted((REPO / "examples").glob("nexrljob-*.yaml"))
            if yaml.safe_load(p.read_text())["spec"].get("recipe") == IMAGE_RECIPE]

GSM8KEvaluator: Any = load_object("evaluator.py:GSM8KEvaluator", RECIPE_DIR)
GSM8KFormatEvaluator: Any = load_object("evaluator.py:GSM8KFormatEvaluator", RECIPE_DIR)
final_answer: Any = load_object("evaluator.py:final_answer", RECIPE_DIR)
prepare_main: Any = load_object("prepare_data.py:main", RECIPE_DIR)
chatml: Any = load_object("prepare_data.py:chatml", RECIPE_DIR)

ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                 "in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A shop sold 1,200 pens at $2 each. How much money did it make?",
     "answer": "It made 1,200 * 2 = <<1200*2=2400>>2,400 dollars.\n#### 2,400"},
]


@pytest.mark.parametrize(("response", "expected"), [
    ("48/2 = 24, 48 + 24 = 72.\n#### 72", ("72", True)),
    ("So the total is \\boxed{72}.", ("72", True)),
    ("The answer is \\boxed{\\$1,000}", ("1000", True)),
    ("\\boxed{2 \\times 9 = 18} dollars", ("18", True)),
    ("\\boxed{\\frac{1}{2}} is not it, \\boxed{5}", ("5", True)),
    ("#### 7 then later \\boxed{8}", ("7", True)),  # #### wins: GSM8K's own marker
    ("She has 10 - 3 = 7 apples left.", ("7", False)),
    ("It went from 5 to -3.", ("-3", False)),
    ("It costs 18.50 dollars.", ("18.50", False)),
    ("no number here", (None, False)),
])
def test_final_answer(response: str, expected: tuple[str | None, bool]) -> None:
    assert final_answer(response) == expected


@pytest.mark.parametrize(("response", "reward", "correct", "shaped"), [
    ("48 + 24 = 72\n#### 72", 1.0, True, 1.0),
    ("Total: \\boxed{72.00}", 1.0, True, 1.0),
    ("48 + 24 = 72 clips.", 1.0, True, 1.0),  # right, unmarked: still right
    ("\\boxed{70}", 0.0, False, 0.1),  # wrong but marked: the format reward only
    ("about 70 clips", 0.0, False, 0.0),
    ("", 0.0, False, 0.0),
])
def test_reward_and_correct(response: str, reward: float, correct: bool, shaped: float) -> None:
    for item in ({"answer": "72"}, {"answer": ROWS[0]["answer"]}):  # prepared, or a raw solution
        result = GSM8KEvaluator().evaluate(item, response)
        assert (result.reward, result.correct) == (reward, correct)
        assert GSM8KFormatEvaluator().evaluate(item, response).reward == shaped


def test_commas_are_normalised() -> None:
    assert GSM8KEvaluator().evaluate({"answer": "2400"}, "It made \\boxed{2,400} dollars.").correct


def rows_of(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepare_data_from_parquet_and_jsonl(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet")
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:1]))
    out = tmp_path / "out"
    prepare_main(["--train", str(tmp_path / "train.parquet"), "--test", str(tmp_path / "test.jsonl"),
                  "--out", str(out)])
    train, test = rows_of(out / "train.jsonl"), rows_of(out / "test.jsonl")
    assert [r["answer"] for r in train] == ["72", "2400"] and test == train[:1]
    first = train[0]
    assert first["question"] == ROWS[0]["question"] and first["solution"] == ROWS[0]["answer"]
    assert first["prompt"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert first["prompt"].endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert ROWS[0]["question"] in first["prompt"]
    # the prepared rows score as the evaluator expects: the reference solution itself is right
    assert GSM8KEvaluator().evaluate(first, first["solution"]).correct


def test_prepare_data_with_a_local_chat_template(tmp_path: Path) -> None:
    tokenizer = char_tokenizer("0123456789")
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}[assistant] {% endif %}")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    prepare_main(["--train", str(tmp_path / "train.jsonl"), "--out", str(tmp_path),
                  "--tokenizer", str(tmp_path / "model")])
    (row,) = rows_of(tmp_path / "train.jsonl")
    assert row["prompt"].startswith("[system] You are a helpful assistant.\n[user] Natalia")
    assert row["prompt"].endswith("[assistant] ")


def test_prepare_data_refuses_a_solution_without_a_final_answer(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q?", "answer": "it is 5"}) + "\n")
    with pytest.raises(ValueError, match="no '#### N' final answer"):
        prepare_main(["--train", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out")])


def job_inputs(example: Path) -> tuple[list[str], dict[str, Any]]:
    """The overrides and cluster section the operator writes into the example job's ConfigMap."""
    job = NexRLJob.model_validate(yaml.safe_load(example.read_text()))
    children = build_children(job, name=job.metadata.name, namespace="team-a", uid="uid-1")
    (configmap,) = [c for c in children if c["kind"] == "ConfigMap"]
    return configmap["data"][OVERRIDES_KEY].splitlines(), yaml.safe_load(configmap["data"][CLUSTER_KEY])


def test_the_examples_name_this_recipe() -> None:
    assert {p.name for p in EXAMPLES} >= {"nexrljob-qwen2.5-1.5b-gsm8k.yaml",
                                          "nexrljob-qwen2.5-1.5b-training-service.yaml"}
    assert (REPO / IMAGE_RECIPE.removeprefix("/app/")).is_file()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_recipe_loads_with_the_example_jobs_overrides(example: Path, tmp_path: Path) -> None:
    overrides, cluster = job_inputs(example)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    cfg = load_config(RECIPE_DIR / "gsm8k.yaml", overrides, cluster_file=tmp_path / "cluster.yaml")
    spec = yaml.safe_load(example.read_text())["spec"]
    assert cfg.model.kind == "hf" and cfg.model.path == spec["model"]["path"]
    assert resolve_class(cfg.rollout.evaluator, {}, Evaluator, cfg.recipe_dir) is GSM8KEvaluator
    assert cfg.mode == spec["mode"] and cfg.launch_mode == "ray"
    assert cfg.inference.engine == "openai" and cfg.cluster.inference.base_urls  # the job's vLLM
    assert cfg.inference.base_urls == []  # the operator's: the replicas come from cluster.yaml only
    job_dir = f"{spec['storage'].get('mountPath', '/data').rstrip('/')}/{cfg.cluster.job_name}"
    assert (cfg.output_dir, cfg.inference.weights_dir) == (job_dir, f"{job_dir}/weights")  # on the PVC
    assert cfg.cluster.job_name == yaml.safe_load(example.read_text())["metadata"]["name"]
    assert cfg.data.rollout_repeat_n == 8 and cfg.trainer.grpo.kl_coef == 0.0
    assert (cfg.trainer.grpo.clip_low, cfg.trainer.grpo.clip_high) == (0.2, 0.28)
    assert cfg.trainer.optim.lr == 1e-6 and cfg.rollout.sampling.max_new_tokens == 1024
    assert cfg.data.path.endswith("/train.jsonl") and cfg.validation.path.endswith("/test.jsonl")
    assert cfg.total_steps == int(next(o for o in spec["overrides"] if o.startswith("total_steps="))[12:])
