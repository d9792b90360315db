"""Tracker console lines: written through the progress bar (tqdm.write) while one is on, so the
screen does not fill with half-drawn bars; plain lines without one."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tqdm import tqdm

from nexrl_runtime.tracking import Tracker

LINE = "[rl step 1] reward_mean=0.5 loss=1.25"


def test_console_line_goes_through_the_bar_when_it_is_on(tmp_path: Path) -> None:
    stream = io.StringIO()  # the bar and the console lines on one stream, as on a terminal
    tracker = Tracker(tmp_path, echo=stream)
    bar = tqdm(total=3, desc="RL", file=stream, disable=False)
    tracker.bar = bar
    try:
        bar.update(1)
        drawn = stream.getvalue()
        tracker.log(1, {"reward_mean": 0.5, "loss": 1.25})
        after = stream.getvalue()[len(drawn) :]
    finally:
        tracker.bar = None
        bar.close()
        tracker.close()
    # tqdm.write: the bar is blanked out, the line printed at the start of a clean line, the bar redrawn
    cleared, line, redrawn = after.partition(LINE + "\n")
    assert line and cleared.startswith("\r") and cleared.endswith("\r") and not cleared.strip()
    assert "RL:" in redrawn and "1/3" in redrawn
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "phase": "rl", "reward_mean": 0.5, "loss": 1.25}]


def test_console_line_is_a_plain_print_without_a_bar(tmp_path: Path) -> None:
    stream = io.StringIO()
    tracker = Tracker(tmp_path, echo=stream)
    tracker.log(1, {"reward_mean": 0.5, "loss": 1.25})
    tracker.log(2, {"reward_mean": 0.5}, phase="warm_start")
    tracker.close()
    assert stream.getvalue() == LINE + "\n" + "[warm_start step 2] reward_mean=0.5\n"
