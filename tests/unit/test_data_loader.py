"""DataLoader and load_items on real JSONL and parquet files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexrl_runtime.config.schema import DataConfig
from nexrl_runtime.data import DataError, DataLoader, Item, load_items


def rows(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(n)]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def write_parquet(path: Path, items: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(items), path)
    return path


def make(tmp_path: Path, n: int = 10, **cfg: Any) -> DataLoader:
    write_jsonl(tmp_path / "train.jsonl", rows(n))
    cfg = {"batch_size": 4, "rollout_repeat_n": 2, **cfg}
    return DataLoader(DataConfig(path="train.jsonl", **cfg), base_dir=tmp_path)


def key(item: Item) -> tuple[Any, ...]:
    return (item.group_id, item.sample_index, item.epoch, item.position, item.index, item.prompt)


def stream(loader: DataLoader, batches: int) -> list[list[tuple[Any, ...]]]:
    return [[key(i) for i in loader.next_batch()] for _ in range(batches)]


def sources(batch: list[Item]) -> list[int]:
    """Source indices of a batch, one per group."""
    return [i.index for i in batch if i.sample_index == 0]


# --- reading ---------------------------------------------------------------------------------


def test_jsonl_and_parquet_read_the_same(tmp_path: Path) -> None:
    data = rows(5)
    a = load_items(write_jsonl(tmp_path / "d.jsonl", data))
    b = load_items(write_parquet(tmp_path / "d.parquet", data))
    assert a == b == data


@pytest.mark.parametrize(
    ("name", "fmt", "writer"),
    [
        ("d.txt", "jsonl", write_jsonl),
        ("d.bin", "parquet", write_parquet),
        ("d.ndjson", "auto", write_jsonl),
        ("d.pq", "auto", write_parquet),
    ],
)
def test_format_explicit_or_from_suffix(tmp_path: Path, name: str, fmt: Any, writer: Any) -> None:
    assert load_items(writer(tmp_path / name, rows(3)), fmt) == rows(3)


def test_blank_lines_skipped_and_limit(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b"}\n{"prompt": "c"}\n')
    assert [r["prompt"] for r in load_items(p)] == ["a", "b", "c"]
    assert [r["prompt"] for r in load_items(p, limit=2)] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"prompt": "a"}\n{"prompt": "b",\n', r"d\.jsonl:2: invalid JSON: .+ \(column \d+\)"),
        ('{"prompt": "a"}\n\n[1, 2]\n', r"d\.jsonl:3: expected a JSON object, got list"),
        ('{"prompt": "a"}\n{"question": "b"}\n', r"d\.jsonl:2: item has no value for prompt key 'prompt'"),
        ('{"prompt": null}\n', r"d\.jsonl:1: item has no value for prompt key 'prompt'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_items(p, prompt_key="prompt")


def test_parquet_errors(tmp_path: Path) -> None:
    no_col = write_parquet(tmp_path / "a.parquet", [{"question": "x"}])
    with pytest.raises(DataError, match=r"a\.parquet: no column for prompt key 'prompt'"):
        load_items(no_col, prompt_key="prompt")
    null = write_parquet(tmp_path / "b.parquet", [{"prompt": "x"}, {"prompt": None}])
    with pytest.raises(DataError, match=r"b\.parquet: row 2: item has no value for prompt key 'prompt'"):
        load_items(null, prompt_key="prompt")
    junk = tmp_path / "c.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataError, match=r"c\.parquet: cannot read as parquet"):
        load_items(junk)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file not found: .*nope\.jsonl"):
        load_items(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("prompt\n")
    with pytest.raises(DataError, match=r"d\.csv: cannot tell the format from the suffix '\.csv'"):
        load_items(tmp_path / "d.csv")


def test_loader_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no items"):
        DataLoader(DataConfig(path="empty.jsonl"), base_dir=tmp_path)
    with pytest.raises(DataError, match=r"3 items is fewer than data\.batch_size=4"):
        make(tmp_path, n=3, drop_last=True)
    write_jsonl(tmp_path / "q.jsonl", [{"question": "x"}])
    with pytest.raises(DataError, match=r"q\.jsonl:1: .*'prompt'"):
        DataLoader(DataConfig(path="q.jsonl", batch_size=1), base_dir=tmp_path)


# --- the stream ------------------------------------------------------------------------------


def test_paths_relative_to_base_dir_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_parquet(tmp_path / "data" / "t.parquet", rows(4))
    cfg = DataConfig(path="data/t.parquet", batch_size=2, rollout_repeat_n=1, shuffle=False)
    loader = DataLoader(cfg, base_dir=tmp_path)
    assert [i.prompt for i in loader.next_batch()] == ["0+0=", "1+1="]
    absolute = DataLoader(cfg.model_copy(update={"path": str(tmp_path / "data/t.parquet")}), base_dir="/x")
    assert len(absolute) == 4


def test_groups_expand_with_stable_ids(tmp_path: Path) -> None:
    loader = make(tmp_path, n=8, rollout_repeat_n=3, shuffle=False)
    batch = loader.next_batch()
    assert len(batch) == 4 * 3
    assert [i.sample_id for i in batch[:4]] == ["e0-i0-s0", "e0-i0-s1", "e0-i0-s2", "e0-i1-s0"]
    assert {i.group_id for i in batch[:3]} == {"e0-i0"}
    assert batch[0].data == {"prompt": "0+0=", "answer": "0"}
    batch[0].data["answer"] = "changed"  # copies do not share their dict
    assert batch[1].data["answer"] == "0"
    loader.next_batch()
    assert {i.group_id for i in loader.next_batch()} == {f"e1-i{k}" for k in range(4)}


def test_shuffle_is_deterministic_and_differs_per_epoch(tmp_path: Path) -> None:
    a, b = make(tmp_path, n=20, shuffle=True, seed=7), make(tmp_path, n=20, shuffle=True, seed=7)
    assert stream(a, 15) == stream(b, 15)
    orders = [a.epoch_order(e) for e in range(3)]
    assert all(sorted(o) == list(range(20)) for o in orders)
    assert orders[0] != orders[1] != orders[2]
    assert make(tmp_path, n=20, seed=8).epoch_order(0) != orders[0]
    assert make(tmp_path, n=20, shuffle=False).epoch_order(1) == list(range(20))
    c = make(tmp_path, n=20, seed=7, batch_size=5)
    assert [x for _ in range(4) for x in sources(c.next_batch())] == orders[0]


@pytest.mark.parametrize(
    ("drop_last", "sizes"),
    [(True, [4, 4, 4, 4]), (False, [4, 4, 2, 4, 4, 2])],
)
def test_drop_last(tmp_path: Path, drop_last: bool, sizes: list[int]) -> None:
    loader = make(tmp_path, n=10, drop_last=drop_last, rollout_repeat_n=1)
    batches = [loader.next_batch() for _ in sizes]
    assert [len(b) for b in batches] == sizes
    epochs = [b[0].epoch for b in batches]
    assert epochs == ([0, 0, 1, 1] if drop_last else [0, 0, 0, 1, 1, 1])
    assert loader.batches_per_epoch == (2 if drop_last else 3)


def test_limit_and_epochs(tmp_path: Path) -> None:
    loader = make(tmp_path, n=10, limit=6, batch_size=3, rollout_repeat_n=1)
    assert len(loader) == 6
    assert sorted(i.index for _ in range(2) for i in loader.next_batch()) == list(range(6))
    write_jsonl(tmp_path / "t.jsonl", rows(6))
    cfg = DataConfig(path="t.jsonl", batch_size=4, rollout_repeat_n=2, drop_last=False)
    finite = DataLoader(cfg, base_dir=tmp_path, epochs=2)
    assert [len(b) for b in finite] == [8, 4, 8, 4]
    assert finite.exhausted and finite.next_batch() == []
    with pytest.raises(ValueError, match="epochs"):
        DataLoader(cfg, base_dir=tmp_path, epochs=0)


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("cut", [0, 1, 2, 3, 5])
def test_resume_equals_uninterrupted_stream(tmp_path: Path, drop_last: bool, cut: int) -> None:
    full = stream(make(tmp_path, n=10, seed=3, drop_last=drop_last), 9)
    first = make(tmp_path, n=10, seed=3, drop_last=drop_last)
    head = stream(first, cut)
    saved = json.loads(json.dumps(first.state()))  # survives a checkpoint round trip
    resumed = make(tmp_path, n=10, seed=3, drop_last=drop_last)
    resumed.load_state(saved)
    assert head + stream(resumed, 9 - cut) == full


def test_skip_to_and_state(tmp_path: Path) -> None:
    loader = make(tmp_path, n=10, drop_last=True)
    loader.skip_to(2, 9)  # fewer than batch_size left: the next batch opens epoch 3
    assert loader.state() == {"epoch": 3, "position": 0, "num_items": 10}
    other = make(tmp_path, n=10)
    other.skip_to(1, 3)
    assert [i.position for i in other.next_batch()][::2] == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="cannot skip"):
        loader.skip_to(0, 11)
    with pytest.raises(ValueError, match="saved with 12 items"):
        loader.load_state({"epoch": 0, "position": 0, "num_items": 12})
