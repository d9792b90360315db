"""Pure parts of the training service: wire validation, datum conversions, the zero-advantage drop,
weight serialisation/atomic folders, and the service's step semantics called directly (no HTTP)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import GPT2Config, GPT2LMHeadModel

from nexrl_runtime.config.schema import GRPOConfig, LRScheduleConfig, OptimConfig, TrainerConfig
from nexrl_runtime.trainer import TRAINERS, GRPOTrainer, collate
from nexrl_runtime.trainer_service import storage
from nexrl_runtime.trainer_service.api import (
    Datum,
    ForwardBackwardRequest,
    NameRequest,
    datums_from_rows,
    datums_to_trajectories,
    finite_or_none,
    none_to_nan,
)
from nexrl_runtime.trainer_service.client import TrainerClient
from nexrl_runtime.trainer_service.server import world_size
from nexrl_runtime.trainer_service.service import Conflict, TrainerService
from nexrl_runtime.trainer_service.service_trainer import TrainingServiceTrainer, kept_rows
from nexrl_runtime.types import Batch, Trajectory

torch.set_num_threads(1)
PAD = 0


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=12, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=PAD,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def traj(tokens: list[int], prompt: int, reward: float, group: str) -> Trajectory:
    mask = [0] * prompt + [1] * (len(tokens) - prompt)
    return Trajectory(tokens, mask, [-1.5 * m for m in mask], reward, group, "r", 0, prompt)


# group "a" has equal rewards (advantage 0): with mini_batch_size=2 its mini-batch sends no datum
BATCH = Batch(
    [
        traj([3, 4, 5, 6], 2, 1.0, "a"),
        traj([3, 4, 7], 2, 1.0, "a"),
        traj([5, 6, 7, 8, 9], 2, 1.0, "b"),
        traj([5, 6, 10], 2, 0.0, "b"),
    ]
)


def test_datum_validation_says_what_is_wrong() -> None:
    good = {"tokens": [1, 2], "loss_mask": [0, 1], "logprobs": [0.0, -1.0], "advantage": 0.5}
    Datum.model_validate(good)
    bad = [
        ({**good, "loss_mask": [0]}, "same length"),
        ({**good, "tokens": [-1, 2]}, "greater than or equal to 0"),
        ({**good, "advantage": math.nan}, "finite"),
        ({**good, "logprobs": [0.0, math.inf]}, "finite"),
        ({**good, "loss_mask": [0, 2]}, "0 or 1"),
        ({**good, "extra": 1}, "Extra inputs"),
        ({**good, "tokens": [], "loss_mask": [], "logprobs": []}, "at least 1"),
    ]
    for body, words in bad:
        with pytest.raises(ValidationError, match=words):
            Datum.model_validate(body)


@pytest.mark.parametrize("name", ["../up", ".hidden", "a/b", "", "x" * 200, "sp ace"])
def test_names_stay_one_plain_path_segment(name: str) -> None:
    with pytest.raises(ValidationError):
        NameRequest(name=name)
    assert NameRequest(name="step-12.v3_a").name == "step-12.v3_a"


def test_datums_round_trip_through_collate() -> None:
    adv = torch.tensor([0.0, 0.5, -1.0, 2.0])
    data = collate(BATCH.trajectories, PAD, adv)
    rows = [1, 2]
    datums = datums_from_rows(data, rows)
    again = collate(datums_to_trajectories(datums), PAD, [d.advantage for d in datums])
    want = data.slice(1, 3)
    for field in ("input_ids", "attention_mask", "loss_mask", "old_logprobs", "advantages"):
        assert torch.equal(getattr(again, field), getattr(want, field)), field
    assert kept_rows(data, drop_zero_advantage=True) == [1, 2, 3]
    assert kept_rows(data, drop_zero_advantage=False) == [0, 1, 2, 3]


def test_non_finite_metrics_travel_as_none() -> None:
    sent = finite_or_none({"loss": 1.0, "grad_norm": math.inf, "kl": math.nan})
    assert sent == {"loss": 1.0, "grad_norm": None, "kl": None}
    back = none_to_nan(sent)
    assert back["loss"] == 1.0 and math.isnan(back["grad_norm"])


def test_world_size_from_the_operator_env() -> None:
    assert world_size({}) == 1
    assert world_size({"NNODES": "1", "NPROC_PER_NODE": "0"}) == 1
    assert world_size({"NNODES": "2", "NPROC_PER_NODE": "8"}) == 16


def test_tied_weights_serialise_with_every_key() -> None:
    model = tiny_model()
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    back = storage.from_bytes(storage.to_bytes(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    copy_of = tiny_model(seed=1)
    copy_of.load_state_dict(back, strict=True)


def test_weights_folder_is_atomic_and_temp_leftovers_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tiny_model().state_dict()
    dst = tmp_path / "v1"
    size = storage.write_weights_folder(state, dst, {"model_type": "gpt2"})
    assert size > 0 and sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(FileExistsError, match="new folder"):
        storage.write_weights_folder(state, dst)

    def disk_full(tensors: object, path: Path, metadata: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(storage, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):  # a failed write leaves no folder and no temp
        storage.write_weights_folder(state, tmp_path / "v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
    (tmp_path / ".v3.abc.tmp").mkdir()
    (tmp_path / ".ckpt.pt.xyz.tmp").write_bytes(b"half")
    assert len(storage.remove_temp_entries(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]


class DirectClient:
    """The client's calls straight into a TrainerService: the remote trainer's logic without HTTP."""

    def __init__(self, service: TrainerService) -> None:
        self.service = service

    def forward_backward(self, req: ForwardBackwardRequest):
        return self.service.forward_backward(ForwardBackwardRequest.model_validate(req.model_dump()))

    def optim_step(self):
        return self.service.optim_step()


def make_service(model: torch.nn.Module, config: TrainerConfig, root: Path) -> TrainerService:
    return TrainerService(model, config, PAD, TRAINERS, root)


def test_all_dropped_mini_batch_still_steps_like_in_process(tmp_path: Path) -> None:
    config = TrainerConfig(type="grpo", mini_batch_size=2, optim=OptimConfig(lr=1e-2))
    local = GRPOTrainer(tiny_model(), config, PAD)
    service = make_service(tiny_model(), config, tmp_path)
    remote = TrainingServiceTrainer(DirectClient(service), config, PAD)  # type: ignore[arg-type]
    for _ in range(3):  # momentum from step 1 moves weights in the all-zero mini-batches after it
        want, got = local.train_step(BATCH), remote.train_step(BATCH)
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-7)
        assert got["dropped_zero_adv"] == 2
    theirs, ours = service.model.state_dict(), local.model.state_dict()
    assert max((theirs[k] - ours[k]).abs().max().item() for k in ours) < 1e-6
    assert service.step == 6


def test_step_needs_a_gradient_and_config_must_match(tmp_path: Path) -> None:
    config = TrainerConfig(type="grpo")
    service = make_service(tiny_model(), config, tmp_path)
    with pytest.raises(Conflict, match="forward_backward first"):
        service.optim_step()
    client = TrainerClient("http://127.0.0.1:9")  # never contacted
    remote = TrainingServiceTrainer(client, config, PAD)
    assert remote.drops_zero_advantage
    sft = config.model_copy(update={"type": "sft"})
    assert not TrainingServiceTrainer(client, sft, PAD).drops_zero_advantage
    with_kl = config.model_copy(update={"grpo": GRPOConfig(kl_coef=0.1)})
    assert not TrainingServiceTrainer(client, with_kl, PAD).drops_zero_advantage
    other = copy.deepcopy(service.health())
    other.optim = OptimConfig(lr=1.0)
    with pytest.raises(ValueError, match="optimizer"):
        remote.check_service(other)
    with pytest.raises(ValueError, match="reference"):
        TrainingServiceTrainer(client, with_kl, PAD).check_service(service.health())
    with pytest.raises(ValueError, match=r"x\.py does not exist"):
        TrainingServiceTrainer(client, config.model_copy(update={"type": "x.py:Mine"}), PAD)
    with pytest.raises(ValueError, match="'sft' is not a loss of the training service"):
        TrainingServiceTrainer(client, sft, PAD).check_service(
            service.health().model_copy(update={"losses": ["grpo"]})
        )
    with pytest.raises(ValueError, match="lr schedule"):
        remote.check_service(
            service.health().model_copy(update={"lr_schedule": LRScheduleConfig(warmup_steps=2)})
        )
    client.close()
