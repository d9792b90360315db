"""Reading item files (JSONL or parquet) into a list of dicts, with errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from nexrl_runtime.config.errors import ConfigError

Format = Literal["auto", "jsonl", "parquet"]

_SUFFIXES: dict[str, Literal["jsonl", "parquet"]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataError(ConfigError):
    """A data file that cannot be read as items; the message names the field, the file and line or
    row. A config error: the same config fails the same way again (the CLI exits 2)."""


def resolve_path(path: str | Path, base_dir: str | Path = ".") -> Path:
    """`path` as is when absolute (after `~` expansion), else relative to `base_dir`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def detect_format(path: Path, format: Format = "auto") -> Literal["jsonl", "parquet"]:
    """The explicit `format`, or the one the file suffix implies."""
    if format != "auto":
        return format
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {sorted(_SUFFIXES)} or set data.format to 'jsonl' or 'parquet'"
        )
    return found


def load_items(
    path: str | Path, format: Format = "auto", *, prompt_key: str | None = None, limit: int | None = None,
    field: str | None = None,
) -> list[dict[str, Any]]:
    """All items of a JSONL or parquet file (the first `limit` only, if given).

    With `prompt_key`, every item must have a non-null value for it, else DataError. `field`: the
    config field that names the file (`data.path`), put first in every DataError's message.
    """
    p = Path(path)
    try:
        if not p.is_file():
            raise DataError(f"data file not found: {p.resolve()}")
        reader = _read_jsonl if detect_format(p, format) == "jsonl" else _read_parquet
        return reader(p, prompt_key, limit)
    except DataError as err:
        if field is None:
            raise
        raise DataError(f"{field}: {err}") from err.__cause__


def _missing_key(where: str, item: dict[str, Any], key: str) -> DataError:
    return DataError(f"{where}: item has no value for prompt key {key!r} (its keys: {sorted(item)})")


def _read_jsonl(path: Path, prompt_key: str | None, limit: int | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from e
            if not isinstance(item, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
            if prompt_key is not None and item.get(prompt_key) is None:
                raise _missing_key(where, item, prompt_key)
            items.append(item)
    return items


def _read_parquet(path: Path, prompt_key: str | None, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read as parquet: {e}") from e
    if limit is not None:
        table = table.slice(0, limit)
    if prompt_key is not None and prompt_key not in table.column_names:
        raise DataError(f"{path}: no column for prompt key {prompt_key!r} (columns: {table.column_names})")
    items = table.to_pylist()
    if prompt_key is not None:
        for row, item in enumerate(items, start=1):
            if item.get(prompt_key) is None:
                raise _missing_key(f"{path}: row {row}", item, prompt_key)
    return items
