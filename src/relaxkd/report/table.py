"""A report table: Markdown for report.md and a CSV file next to it."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from relaxkd.artifacts import atomic_output


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class Table:
    def __init__(self, title: str, header: list[str], csv_name: str):
        self.title, self.header, self.csv_name = title, header, csv_name
        self.rows: list[list[str]] = []
        self.intro: list[str] = []
        self.notes: list[str] = []

    def add(self, *row: Any) -> None:
        self.rows.append([fmt(v) for v in row])

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.intro:
            lines += self.intro + [""]
        lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        lines += ["", f"CSV: [`{self.csv_name}`]({self.csv_name})"]
        return "\n".join(lines) + "\n"

    def write_csv(self, directory: Path) -> None:
        with atomic_output(directory / self.csv_name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(self.rows)
