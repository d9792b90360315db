"""Run checkpoints, without a run: pruning (pure), atomic writes and what counts as complete, the
config hash and its error, the metrics file of a resumed run, the trainer's files, the HF export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime import cli
from nexrl_runtime.checkpoint import Saved, to_prune
from nexrl_runtime.config.loader import ConfigError
from nexrl_runtime.config.schema import ModelConfig, NexRLConfig, TrainerConfig
from nexrl_runtime.models import build_policy
from nexrl_runtime.tracking import Tracker
from nexrl_runtime.trainer.grpo import GRPOTrainer


def config(**over) -> NexRLConfig:
    base = {"data": {"path": "x.jsonl"}, "rollout": {"evaluator": "e.py:E"}}
    return NexRLConfig.model_validate({**base, **over})


# -- pruning --------------------------------------------------------------------------------------
def test_keep_last_none_keeps_everything() -> None:
    assert to_prune([Saved(s) for s in range(1, 9)], None, "max", 8) == []


def test_keep_last_keeps_the_newest() -> None:
    assert to_prune([Saved(s) for s in (2, 4, 6, 8)], 2, None, 8) == [2, 4]


def test_the_best_and_the_one_just_written_stay() -> None:
    saved = [Saved(2, 0.1), Saved(4, 0.9), Saved(6, 0.3), Saved(8, 0.2), Saved(10, float("nan"))]
    assert to_prune(saved, 1, "max", 10) == [2, 6, 8]
    assert to_prune(saved, 1, "min", 10) == [4, 6, 8]
    # the one just written stays even when it is not among the newest (a redone step)
    assert to_prune(saved, 1, None, 4) == [2, 6, 8]


def test_ties_keep_the_oldest_best_and_unscored_steps_are_never_best() -> None:
    assert to_prune([Saved(1, 0.5), Saved(2, 0.5), Saved(3, None), Saved(4)], 1, "max", 4) == [2, 3]


@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.none() | st.floats(-5, 5)), min_size=1, unique_by=lambda x: x[0]
    ),
    st.integers(1, 5),
    st.sampled_from(["max", "min", None]),
)
def test_pruning_never_deletes_the_newest_the_best_or_the_one_just_written(saved, keep_last, mode) -> None:
    entries = [Saved(s, m) for s, m in saved]
    just = max(s for s, _ in saved)
    gone = set(to_prune(entries, keep_last, mode, just))
    steps = sorted(s for s, _ in saved)
    assert just not in gone and not gone & set(steps[-keep_last:])
    assert gone <= set(steps)
    scored = [e for e in entries if e.metric is not None]
    if mode and scored:
        best = (max if mode == "max" else min)(e.metric for e in scored)
        assert any(e.metric == best and e.step not in gone for e in scored)
    assert len(steps) - len(gone) <= keep_last + 2


def test_prune_on_disk_removes_whole_folders(tmp_path: Path) -> None:
    cfg = config(checkpoint={"keep_last": 1, "keep_best": {"metric": "val_accuracy"}})
    for step, acc in ((1, 0.5), (2, 0.9), (3, 0.1), (4, 0.2)):
        ckpt.write_checkpoint(
            tmp_path,
            step,
            lambda d, a=acc: ckpt.write_json(d / "state.json", {"metrics": {"val_accuracy": a}}),
        )
    assert ckpt.prune(tmp_path, cfg, 4) == [1, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_2", "global_step_4"]


# -- atomic writes --------------------------------------------------------------------------------
def write_files(d: Path) -> None:
    (d / "model.bin").write_bytes(b"x" * 1000)
    ckpt.write_json(d / "state.json", {"step": 1})


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def boom(d: Path) -> None:
        write_files(d)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.write_checkpoint(tmp_path, 3, boom)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_saves_are_never_picked(tmp_path: Path) -> None:
    good = ckpt.write_checkpoint(tmp_path, 2, write_files)
    assert (
        ckpt.is_complete(good) and json.loads((good / ckpt.MARKER).read_text())["files"]["model.bin"] == 1000
    )
    # killed before the rename: a temp folder with every file but no marker
    tmp = tmp_path / ".tmp-global_step_4-dead"
    tmp.mkdir()
    write_files(tmp)
    # a folder whose file was cut short after its marker was copied, and one without a marker
    partial = ckpt.write_checkpoint(tmp_path, 6, write_files)
    (partial / "model.bin").write_bytes(b"x" * 10)
    no_marker = tmp_path / "global_step_8"
    no_marker.mkdir()
    write_files(no_marker)
    # a marker that does not parse (cut short itself)
    broken = ckpt.write_checkpoint(tmp_path, 10, write_files)
    (broken / ckpt.MARKER).write_text('{"step": 1')
    assert not any(ckpt.is_complete(p) for p in (tmp, partial, no_marker, broken))
    assert ckpt.complete_checkpoints(tmp_path) == [(2, good)]
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert ckpt.remove_temps(tmp_path) == [tmp] and not tmp.exists()


def test_a_redone_step_replaces_its_folder(tmp_path: Path) -> None:
    ckpt.write_checkpoint(tmp_path, 2, lambda d: (d / "a").write_text("old"))
    path = ckpt.write_checkpoint(tmp_path, 2, lambda d: (d / "b").write_text("new"))
    assert sorted(p.name for p in path.iterdir()) == [ckpt.MARKER, "b"]


# -- config hash ----------------------------------------------------------------------------------
def test_the_hash_ignores_length_paths_and_logging_but_not_the_run() -> None:
    base = ckpt.config_hash(config())[0]
    same = config(
        total_steps=5,
        output_dir="elsewhere",
        resume={"mode": "auto"},
        logging={"plot": False},
        checkpoint={"every": 3},
    )
    assert ckpt.config_hash(same)[0] == base
    assert ckpt.config_hash(config(trainer={"optim": {"lr": 1e-3}}))[0] != base
    assert ckpt.config_hash(config(seed=1))[0] != base


def test_another_configs_checkpoint_fails_naming_hashes_and_keys(tmp_path: Path) -> None:
    theirs = config(seed=3, trainer={"optim": {"lr": 1e-3}})
    digest, keys = ckpt.config_hash(theirs)
    path = ckpt.write_checkpoint(
        tmp_path,
        1,
        lambda d: ckpt.write_json(d / "state.json", {"config_hash": digest, "config_key_hashes": keys}),
    )
    ours = config(resume={"mode": "from_path", "path": str(path)})
    with pytest.raises(ConfigError) as err:
        ckpt.resolve_resume(ours)
    msg = str(err.value)
    assert msg.startswith("resume.path: ") and digest in msg and ckpt.config_hash(ours)[0] in msg
    assert "differing top-level keys: seed, trainer" in msg
    assert ckpt.resolve_resume(theirs.model_copy(update={"resume": ours.resume})) == path


def test_from_path_refuses_an_incomplete_folder(tmp_path: Path) -> None:
    (tmp_path / "global_step_1").mkdir()
    with pytest.raises(ConfigError, match=r"resume.path: .* is not a complete checkpoint"):
        ckpt.resolve_resume(config(resume={"mode": "from_path", "path": str(tmp_path / "global_step_1")}))
    with pytest.raises(ConfigError, match="is not a folder"):
        ckpt.resolve_resume(config(resume={"mode": "from_path", "path": str(tmp_path / "nope")}))


def test_auto_with_no_checkpoint_is_a_fresh_start(tmp_path: Path) -> None:
    assert ckpt.resolve_resume(config(resume={"mode": "auto"}, checkpoint={"dir": str(tmp_path)})) is None
    assert config(output_dir="out").checkpoint_dir == "out/checkpoints"


# -- metrics of a resumed run ---------------------------------------------------------------------
def test_resume_at_keeps_one_series(tmp_path: Path) -> None:
    rows = [{"step": 50, "phase": "warm_start"}, {"step": 0, "phase": "rl"}]
    rows += [{"step": s, "phase": "rl", "loss": s} for s in range(1, 6)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "pha'  # a line cut by the kill
    (tmp_path / "metrics.jsonl").write_text(text)
    tracker = Tracker(tmp_path)
    kept = tracker.resume_at(3)
    assert [r["step"] for r in kept] == [50, 0, 1, 2, 3] and tracker.history == kept
    tracker.log(4, {"loss": 40})
    tracker.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [50, 0, 1, 2, 3, 4] and lines[-1]["loss"] == 40


# -- trainer files and export ---------------------------------------------------------------------
def test_trainer_checkpoint_round_trip_with_a_kl_reference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, tok = build_policy(ModelConfig(hidden_size=16, num_layers=1, num_heads=2))
    tcfg = TrainerConfig.model_validate({"grpo": {"kl_coef": 0.1}})
    trainer = GRPOTrainer(model, tcfg, tok.pad_token_id)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    trainer.optimizer.state[trainer.params[0]] = {
        "step": torch.tensor(3.0),
        "exp_avg": torch.ones_like(trainer.params[0]),
        "exp_avg_sq": torch.ones_like(trainer.params[0]),
    }
    trainer.global_step = 7
    assert trainer.save_checkpoint(tmp_path) == 7
    assert {p.name for p in tmp_path.iterdir()} == {
        "model.safetensors",
        "ref_model.safetensors",
        "optimizer.pt",
    }

    torch.manual_seed(1)
    other_model, _ = build_policy(ModelConfig(hidden_size=16, num_layers=1, num_heads=2))
    other = GRPOTrainer(other_model, tcfg, tok.pad_token_id)
    assert other.load_checkpoint(tmp_path) == 7
    for a, b in zip(model.state_dict().values(), other_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other.ref_model is not None and trainer.ref_model is not None
    for a, b in zip(
        trainer.ref_model.state_dict().values(), other.ref_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(other.optimizer.state[other.params[0]]["exp_avg"], torch.ones_like(other.params[0]))


def test_export_hf_loads_through_the_model_factory(tmp_path: Path) -> None:
    cfg = config(model={"hidden_size": 16, "num_layers": 1, "num_heads": 2})
    torch.manual_seed(0)
    model, tok = build_policy(cfg.model)
    trainer = GRPOTrainer(model, cfg.trainer, tok.pad_token_id)

    def write(d: Path) -> None:
        trainer.save_checkpoint(d)
        ckpt.write_json(d / ckpt.CONFIG, cfg.model_dump(mode="json"))

    path = ckpt.write_checkpoint(tmp_path / "ckpts", 0, write)
    assert cli.main(["export", str(path), str(tmp_path / "hf")]) == 0
    loaded, loaded_tok = build_policy(ModelConfig(kind="hf", path=str(tmp_path / "hf"), device="cpu"))
    ids = torch.tensor([tok("12+34=")["input_ids"]])
    assert loaded_tok("12+34=")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    assert cli.main(["export", str(tmp_path / "ckpts"), str(tmp_path / "x")]) == 2
