"""The comparison table: one row per run (report.csv, report.md, report.html) and the terminal's."""

from __future__ import annotations

import html
import json
import re
import unicodedata

import pandas as pd

from .. import compare, guard
from ..plan import argument_text
from .study import (
    DELTA_METRICS,
    FIGURES,
    METRICS,
    TERMINAL_METRICS,
    RunRecord,
    Study,
    delta_column,
    interval_column,
    metric_column,
    p_column,
)

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
    flagged = any(r.flags for r in study.records)
    rows = []
    for record in study.records:
        # The verdict's set first, before the swept arguments: at 1400 px its accuracy is in view.
        row = {"run": record.name, **({"what": record.label or ""} if labelled else {}), "state": record.state}
        reference = by_name.get(record.reference)
        first, others = study.sets[:1], study.sets[1:]
        for dataset in first:
            row.update(_metric_cells(record, reference, dataset, compared))
        row.update(dict.fromkeys(swept_arguments(study)))   # their place; the values are set below, as objects
        if compared:
            row["compared with"] = record.reference or ""
        for dataset in others:
            row.update(_metric_cells(record, reference, dataset, compared))
        if selected:
            row.update(_selection_cells(record))
        row.update({FIGURES[key]: record.row.get(key) for key in FIGURES})
        if flagged:
            row["loss flags"] = "; ".join(flag.split(":", 1)[0] for flag in record.flags)
        rows.append(row)
    table = pd.DataFrame(rows)
    for argument in swept_arguments(study):   # as written: 8 beside 16, not 16.0; true, not True
        table[argument] = pd.Series([argument_text(r.point.get(argument)) for r in study.records], dtype=object)
    if "trainable params" in table:
        table["trainable params"] = table["trainable params"].astype("Int64")   # a count, even beside a gap
    return table


def _metric_cells(record: RunRecord, reference: RunRecord | None, dataset: str, compared: bool) -> dict:
    """Each metric (%) of one set, with its Δ against the reference, interval and p beside it."""
    cells = {}
    for metric in METRICS:
        column = metric_column(metric, dataset)
        cells[column] = mine = record.row.get(column)
        if compared and metric in DELTA_METRICS:
            theirs = reference.row.get(column) if reference else None
            cells[delta_column(metric, dataset)] = (round(mine - theirs, 2)
                                                    if mine is not None and theirs is not None else None)
            cells.update(_tested_cells(record, metric, dataset))
    return cells


def _tested_cells(record: RunRecord, metric: str, dataset: str) -> dict:
    """The Δ's paired bootstrap interval and its p-value (Holm-adjusted in a sweep of several)."""
    tested = record.comparisons.get((dataset, metric))
    if not tested or tested.get("p_value") is None:
        return {interval_column(metric, dataset): None, p_column(metric, dataset): None}
    low, high = tested["diff_ci"]
    return {interval_column(metric, dataset): f"[{low:+.1f}, {high:+.1f}]",
            p_column(metric, dataset): float(f"{tested['p_holm']:.3g}")}   # 3 digits: 2.84e-10, not 0


def delta_text(record: RunRecord, metric: str, dataset: str) -> str:
    """A Δ as the terminal shows it: pp, signed, * when distinguishable from noise."""
    tested = record.comparisons.get((dataset, metric))
    if not tested or tested.get("diff") is None:
        return "–"
    return f"{tested['diff']:+.1f}" + ("*" if compare.distinguishable(tested["p_holm"]) else "")


def _selection_cells(record: RunRecord) -> dict:
    """The checkpoint select: chose and its dev score (the score that chose it)."""
    chosen = (record.selection or {}).get("chosen", {})
    metric, on = (record.selection or {}).get("metric", "acc"), (record.selection or {}).get("on", "dev")
    return {"selected step": chosen.get("step"), "of steps": (record.selection or {}).get("final_step"),
            f"dev {metric} % [{on}]": chosen.get(metric)}


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _text(value, column: str = "") -> str:
    """A table cell as a person reads it, one format per kind of column: percentages with one
    decimal, Δ signed, p-values and losses with 3 significant digits, counts as integers,
    booleans as the spec writes them (true/false), – for nothing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and column:
        if column.startswith("Δ"):
            return f"{value:+.1f}"
        if " % " in column or column.endswith(" %"):
            return f"{value:.1f}"
        if column.startswith("p of ") or column in ("final loss",):
            return f"{value:.3g}"
        if column in ("train time (s)", "samples/s", "peak mem (GB)"):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


MARKDOWN_ACTIVE = re.compile(r"(\\|`|\||(?<=\])\()")


def markdown_text(value) -> str:
    """Text a Markdown viewer shows as text: HTML escaped (no live <img onerror>, no <autolink>), and
    what would start code, end a table cell or make ``[text](target)`` a link or an image that loads
    backslash-escaped; control and bidirectional-override characters shown as escapes. Underscores
    and brackets stay as they are: names like telecom_test_100 read plainly in the file itself."""
    return MARKDOWN_ACTIVE.sub(r"\\\1", html.escape(guard.printable(str(value)), quote=False))


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(markdown_text(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(markdown_text(_text(v, c)) for v, c in zip(row, table.columns)) + " |"
            for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_csv(table: pd.DataFrame) -> bytes:
    """The table as CSV with every text cell a spreadsheet would run as a formula (OWASP: one that
    begins with = + - @ tab or CR, and is not a plain number) prefixed with a single quote."""
    def neutral(value):
        if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
            return "'" + value
        return value

    columns = [neutral(c) for c in table.columns]
    safe = table.map(neutral)
    safe.columns = columns
    return safe.to_csv(index=False).encode("utf-8")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def terminal_table(study: Study) -> str:
    """The table a terminal has room for: each run with what it is, its state, the main metrics in
    percent per predict set (with Δacc against its reference, * when distinguishable from noise),
    and the final loss (! when its loss is flagged)."""
    prefix = _common_prefix(study.sets)
    labelled = any(r.label for r in study.records)
    compared = any(r.comparisons for r in study.records)
    per_set = [*TERMINAL_METRICS, *(["Δacc"] if compared else [])]
    headers = ["run", *["what"] * labelled, "state"] + [f"{metric}{' %' if metric in METRICS else ''} "
                                                        f"{dataset[len(prefix):]}" for dataset in study.sets
                                                        for metric in per_set] + ["final loss"]
    rows = [
        [r.name, *[r.label or ""] * labelled, r.state]
        + [_text(r.row.get(metric_column(m, d)), metric_column(m, d)) if m in METRICS else delta_text(r, "acc", d)
           for d in study.sets for m in per_set]
        + [_text(r.row.get("final_loss"), "final loss") + ("!" if r.flags else "")]
        for r in study.records
    ]
    widths = [max(_width(str(c)) for c in column) for column in zip(headers, *rows)]
    def line(cells):
        return "  ".join(str(c) + " " * (w - _width(str(c))) for c, w in zip(cells, widths)).rstrip()
    legend = []
    if compared:
        legend.append("Δacc: percentage points against the run it is compared with; * distinguishable from noise at "
                      "5 % (exact McNemar, Holm-adjusted in a sweep), no * not distinguishable")
    if any(r.flags for r in study.records):
        legend.append("!: the run's training loss is flagged (see the notes)")
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows), *legend])


def _common_prefix(names: list[str]) -> str:
    """telecom_train_100, telecom_test_100 -> 'telecom_' (cut at an underscore)."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)
    common = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:first.rfind("_", 0, common) + 1]


def config_table(table: pd.DataFrame) -> str:
    """The by-configuration table for a terminal: name, replicas, exact match per set, Δ with *."""
    acc = [c for c in table.columns if c.startswith("acc % mean ± sd")]
    deltas = [c for c in table.columns if c.startswith("Δacc pp")]
    headers = ["configuration", "n", *[c.replace("acc % mean ± sd ", "acc % ") for c in acc],
               *[c.replace("Δacc pp ", "Δacc ") for c in deltas]]
    rows = []
    for _, row in table.iterrows():
        cells = [row["configuration"], str(row["replicas"]), *[str(row[c]) for c in acc]]
        for column in deltas:
            p = row[column.replace("Δacc pp", "p of Δacc")]
            delta = row[column]
            cells.append("–" if delta is None or pd.isna(delta)
                         else f"{delta:+.1f}" + ("*" if compare.distinguishable(None if pd.isna(p) else p) else ""))
        rows.append(cells)
    widths = [max(_width(str(c)) for c in column) for column in zip(headers, *rows)]
    def line(cells):
        return "  ".join(str(c) + " " * (w - _width(str(c))) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
