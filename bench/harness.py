"""Rows, tables and JSON output shared by every benchmark."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bus.text import table as text_table

OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass
class Row:
    """One figure beside the reference measured in the same run."""

    metric: str
    value: float
    unit: str
    baseline: float
    baseline_name: str = ""
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    def as_json(self) -> dict:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 4)
        return data


def ns_per_call(function: Callable[[], object], *, min_seconds: float = 0.2, repeats: int = 5) -> float:
    """Median nanoseconds per call over `repeats` timed batches of >= `min_seconds` each."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            function()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds / 4:
            break
        number *= 4
    number = max(1, int(number * (min_seconds / max(elapsed, 1e-9)) / 4) * 4)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        samples.append((time.perf_counter() - start) / number * 1e9)
    return statistics.median(samples)


def _format(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def report(name: str, rows: list[Row], out_dir: Path = OUT_DIR) -> Path:
    """Print the table and write `out_dir/name.json`; returns the JSON path."""
    headers = ("metric", "value", "unit", "baseline", "ratio", "target")
    table = [
        (r.metric, _format(r.value), r.unit, f"{_format(r.baseline)} ({r.baseline_name})" if r.baseline_name else _format(r.baseline), f"{r.ratio:.3f}", r.target)
        for r in rows
    ]
    print(f"\n== bench {name} ==")
    print("\n".join(text_table(table, headers, rule=True)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps([r.as_json() for r in rows], indent=2) + "\n")
    print(f"wrote {path}")
    return path
