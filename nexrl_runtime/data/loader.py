"""The rollout data stream: items in (shuffled) epochs, each expanded into a group of samples."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexrl_runtime.config.schema import DataConfig
from nexrl_runtime.data.readers import DataError, load_items, resolve_path


@dataclass(frozen=True)
class Item:
    """One sample to roll out: copy `sample_index` of source item `index`, in group `group_id`.

    `position` is the item's place in its epoch's order; `group_id` ("e{epoch}-i{index}") is the
    same for all copies and the same after a resume.
    """

    data: dict[str, Any]
    prompt: Any
    group_id: str
    sample_index: int
    epoch: int
    position: int
    index: int

    @property
    def sample_id(self) -> str:
        """Unique id of this copy, e.g. "e0-i17-s3"."""
        return f"{self.group_id}-s{self.sample_index}"


class DataLoader:
    """Batches of `config.batch_size` source items, each expanded into `rollout_repeat_n` Items.

    Epochs follow each other forever (or stop after `epochs`, then `next_batch` returns []).
    With `shuffle`, epoch e is ordered by a permutation fixed by (seed, e). A short last batch
    is skipped with `drop_last`, else returned as is; a batch never spans two epochs.
    """

    def __init__(
        self,
        config: DataConfig,
        base_dir: str | Path = ".",
        epochs: int | None = None,
        prompt_length: Callable[[Item], int] | None = None,
        max_prompt_length: int | None = None,
    ) -> None:
        """With `prompt_length` (tokens of an Item's prompt), items whose prompt is longer than
        `max_prompt_length` are dropped here (`filtered_too_long`), or, with `data.too_long: error`,
        refused with a DataError naming the item: never a failure mid-run."""
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
        self.config = config
        self.path = resolve_path(config.path, base_dir)
        self.epochs = epochs
        self._rows = load_items(
            self.path, config.format, prompt_key=config.prompt_key, limit=config.limit, field="data.path"
        )
        self.filtered_too_long = 0
        if prompt_length is not None and max_prompt_length is not None:
            self._rows = self._fitting(prompt_length, max_prompt_length)
        if not self._rows:
            raise DataError(f"data.path: {self.path}: no items")
        if config.drop_last and len(self._rows) < config.batch_size:
            raise DataError(
                f"data.batch_size: {self.path}: {len(self._rows)} items is fewer than "
                f"data.batch_size={config.batch_size} "
                "with data.drop_last=true, so no batch could ever be formed"
            )
        self._epoch = 0
        self._position = 0
        self._order_cache: tuple[int, list[int]] = (-1, [])

    def _fitting(self, prompt_length: Callable[[Item], int], limit: int) -> list[dict[str, Any]]:
        kept = []
        for i, row in enumerate(self._rows):
            n = prompt_length(Item(row, row[self.config.prompt_key], f"e0-i{i}", 0, 0, i, i))
            if n <= limit:
                kept.append(row)
            elif self.config.too_long == "error":
                raise DataError(
                    f"data.path: {self.path}: item {i} has a prompt of {n} tokens, more than the "
                    f"{limit} that leave room for a response under rollout.max_sequence_length "
                    "(data.too_long: filter drops such items)"
                )
        self.filtered_too_long = len(self._rows) - len(kept)
        return kept

    def require_key(self, key: str, field: str) -> None:
        """A DataError naming `field` when an item has no value for `key` (found at start-up, not
        when a run reaches that item)."""
        for i, row in enumerate(self._rows):
            if row.get(key) is None:
                raise DataError(f"{field}: item {i} of {self.path} has no value for {key!r} "
                                f"(its keys: {sorted(row)})")

    def __len__(self) -> int:
        """Number of source items (after `limit`)."""
        return len(self._rows)

    @property
    def batches_per_epoch(self) -> int:
        n, bs = len(self._rows), self.config.batch_size
        return n // bs if self.config.drop_last else -(-n // bs)

    @property
    def exhausted(self) -> bool:
        return self.epochs is not None and self._epoch >= self.epochs

    def epoch_order(self, epoch: int) -> list[int]:
        """Source indices in the order epoch `epoch` visits them."""
        if self._order_cache[0] != epoch:
            order = list(range(len(self._rows)))
            if self.config.shuffle:
                random.Random(f"nexrl-data:{self.config.seed}:{epoch}").shuffle(order)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def next_batch(self) -> list[Item]:
        """The expanded Items of the next batch of source items ([] once `epochs` are done)."""
        if self.exhausted:
            return []
        order = self.epoch_order(self._epoch)
        start, end = self._position, min(self._position + self.config.batch_size, len(order))
        items = [self._expand(self._epoch, pos, order[pos]) for pos in range(start, end)]
        self._position = end
        self._roll_over()
        return [copy for group in items for copy in group]

    def __iter__(self) -> Iterator[list[Item]]:
        while batch := self.next_batch():
            yield batch

    def state(self) -> dict[str, int]:
        """Where the stream stands: the next batch starts at `position` of `epoch`."""
        return {"epoch": self._epoch, "position": self._position, "num_items": len(self._rows)}

    def load_state(self, state: Mapping[str, int]) -> None:
        """Resume from a `state()`; refuses one taken on a data set of another size."""
        n = state.get("num_items")
        if n is not None and n != len(self._rows):
            raise ValueError(
                f"data state was saved with {n} items but {self.path} now has {len(self._rows)}; "
                "resuming would replay a different stream"
            )
        self.skip_to(state["epoch"], state["position"])

    def skip_to(self, epoch: int, position: int) -> None:
        """Continue as an uninterrupted stream would from `position` of `epoch`."""
        if epoch < 0 or not 0 <= position <= len(self._rows):
            raise ValueError(f"cannot skip to epoch={epoch}, position={position} of {len(self._rows)} items")
        self._epoch, self._position = epoch, position
        self._roll_over()

    def _roll_over(self) -> None:
        left = len(self._rows) - self._position
        if left == 0 or (self.config.drop_last and left < self.config.batch_size):
            self._epoch, self._position = self._epoch + 1, 0

    def group(self, epoch: int, position: int, index: int) -> list[Item]:
        """The Items of one group, as `next_batch` made them (a checkpoint stores only these ids)."""
        if not 0 <= index < len(self._rows):
            raise ValueError(f"item index {index} is out of range for {len(self._rows)} items")
        return self._expand(epoch, position, index)

    def _expand(self, epoch: int, position: int, index: int) -> list[Item]:
        row = self._rows[index]
        group_id = f"e{epoch}-i{index}"
        prompt = row[self.config.prompt_key]
        return [
            Item(dict(row), prompt, group_id, k, epoch, position, index)
            for k in range(self.config.rollout_repeat_n)
        ]
