"""The comparison table: one row per run (report.csv, report.md, report.html) and the terminal's."""

from __future__ import annotations

import json
import unicodedata

import pandas as pd

from .study import DELTA_METRICS, FIGURES, METRICS, TERMINAL_METRICS, RunRecord, Study, delta_column, metric_column

# ---------------------------------------------------------------- the comparison table


def swept_arguments(study: Study) -> list[str]:
    return list(dict.fromkeys(argument for axis in study.axes for argument in axis["arguments"]))


def comparison_table(study: Study) -> pd.DataFrame:
    """One row per run: what it is, its swept arguments, each metric (%) per predict set with Δ
    (percentage points) against its reference run beside it, then its training figures."""
    by_name = {r.name: r for r in study.records}
    compared = any(r.reference for r in study.records)
    labelled = any(r.label for r in study.records)
    selected = any(r.selection for r in study.records)
    rows = []
    for record in study.records:
        row = {"run": record.name, **({"what": record.label or ""} if labelled else {}), "state": record.state}
        row.update({argument: _cell(record.point.get(argument)) for argument in swept_arguments(study)})
        if compared:
            row["compared with"] = record.reference or ""
        reference = by_name.get(record.reference)
        for dataset in study.sets:
            for metric in METRICS:
                column = metric_column(metric, dataset)
                row[column] = mine = record.row.get(column)
                if compared and metric in DELTA_METRICS:
                    theirs = reference.row.get(column) if reference else None
                    row[delta_column(metric, dataset)] = (round(mine - theirs, 2)
                                                          if mine is not None and theirs is not None else None)
        if selected:
            row.update(_selection_cells(record))
        row.update({FIGURES[key]: record.row.get(key) for key in FIGURES})
        rows.append(row)
    table = pd.DataFrame(rows)
    if "trainable params" in table:
        table["trainable params"] = table["trainable params"].astype("Int64")   # a count, even beside a gap
    return table


def _selection_cells(record: RunRecord) -> dict:
    """The checkpoint select: chose and its dev score (the score that chose it)."""
    chosen = (record.selection or {}).get("chosen", {})
    metric, on = (record.selection or {}).get("metric", "acc"), (record.selection or {}).get("on", "dev")
    return {"selected step": chosen.get("step"), "of steps": (record.selection or {}).get("final_step"),
            f"dev {metric} % [{on}]": chosen.get(metric)}


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _text(value) -> str:
    """A table cell as a person reads it: – for nothing, no trailing .0 on whole numbers."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = [
        "| " + " | ".join(_text(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def terminal_table(study: Study) -> str:
    """The table a terminal has room for: each run with what it is, its state, the main metrics in
    percent per predict set, and the final loss."""
    prefix = _common_prefix(study.sets)
    labelled = any(r.label for r in study.records)
    headers = ["run", *["what"] * labelled, "state"] + [f"{metric} % {dataset[len(prefix):]}" for dataset in study.sets
                                                        for metric in TERMINAL_METRICS] + ["final loss"]
    rows = [
        [r.name, *[r.label or ""] * labelled, r.state]
        + [_text(r.row.get(metric_column(m, d))) for d in study.sets for m in TERMINAL_METRICS]
        + [_text(r.row.get("final_loss"))]
        for r in study.records
    ]
    widths = [max(_width(str(c)) for c in column) for column in zip(headers, *rows)]
    def line(cells):
        return "  ".join(str(c) + " " * (w - _width(str(c))) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _common_prefix(names: list[str]) -> str:
    """telecom_train_100, telecom_test_100 -> 'telecom_' (cut at an underscore)."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)
    common = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:first.rfind("_", 0, common) + 1]


