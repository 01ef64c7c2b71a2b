"""report.html (one self-contained page) and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from .. import rundir, score
from .study import LOWER_IS_BETTER, METRICS, RunRecord, Study
from .tables import _markdown, markdown_text

# ---------------------------------------------------------------- report.md, report.csv, report.html


def units_line(study: Study, compared: bool) -> str:
    text = ("Every metric is a percentage of its predict set: " + "; ".join(f"{m} = {w}" for m, w in METRICS.items())
            + ".")
    if compared:
        text += (" Δ columns are percentage points (pp) against the run in 'compared with': the A/B base in a "
                 "one-at-a-time (vary) sweep, else LLaMA-Factory's own defaults (the upstream baseline).")
    return text


def _json_cell(value):
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return None
    if hasattr(value, "item"):     # numpy and pandas scalars
        return value.item()
    return value


def _better(column: str) -> str | None:
    if column.split(" ", 1)[0] in METRICS or column.startswith("Δ") or column == "samples/s":
        return "high"
    return "low" if column in LOWER_IS_BETTER else None


def _run_links(record: RunRecord, root: Path, out: Path) -> list[tuple[str, str]]:
    import os

    run_dir = root / record.name
    base = os.path.relpath(run_dir, out)
    names = [("directory", ""), ("logs", rundir.LOGS + "/"), ("train.yaml", rundir.TRAIN_FILE)]
    names += [(f"predict-{d}.yaml", rundir.predict_file(d)) for d in record.answers]
    names += [("scores.json", rundir.SCORES)]
    return [(name, f"{base}/{target}") for name, target in names if (run_dir / target).exists()]


def _question_rows(study: Study, dataset: str) -> list[dict]:
    rows = study.questions.get(dataset) or []
    count = max([len(r.answers.get(dataset, [])) for r in study.records] + [0])
    out = []
    for index in range(count):
        known = rows[index] if index < len(rows) else None
        answered = [r.answers.get(dataset, []) for r in study.records]
        label = known["label"] if known else next((a[index][1] for a in answered if index < len(a)), "")
        out.append({"index": index, "question": known["question"] if known else "",
                    "prompt": known.get("prompt", "") if known else "", "label": label.strip(),
                    "category": known["category"] if known else "", "long": len(label.strip()) > score.LONG_THRESHOLD,
                    "answers": [[a[index][0], a[index][0].strip() == label.strip()] if index < len(a) else None
                                for a in answered]})
    return out


def _category_table(study: Study, dataset: str, rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        if row["category"]:
            counts[row["category"]] = counts.get(row["category"], 0) + 1
    categories = sorted(set(counts) | {c for r in study.records for c in r.by_category.get(dataset, {})})
    return {"categories": categories, "rows": [counts.get(c, 0) for c in categories],
            "acc": [[r.by_category.get(dataset, {}).get(c) for c in categories] for r in study.records]}


def html_page(study: Study, table: pd.DataFrame, images: dict[str, bytes], root: Path, out: Path,
              by_config: pd.DataFrame | None = None) -> bytes:
    """report.html: one self-contained file (inline CSS, JS and images; no network, no server)."""
    import base64

    import jinja2
    from markupsafe import Markup

    from .. import __version__
    from ..cluster import resource_dir

    columns = list(table.columns)
    questions = {d: _question_rows(study, d) for d in study.sets}
    data = {
        "columns": columns,
        "rows": [[_json_cell(v) for v in row] for row in table.itertuples(index=False)],
        "numeric": [pd.api.types.is_numeric_dtype(table[c]) for c in columns],
        "better": {c: _better(c) for c in columns if _better(c)},
        "stateIndex": columns.index("state"),
        "sets": study.sets,
        "runs": [{"name": r.name, "label": r.label, "title": r.title, "state": r.state, "failure": r.failure,
                  "links": _run_links(r, root, out)} for r in study.records],
        "questions": questions,
        "categories": {d: _category_table(study, d, questions[d]) for d in study.sets},
        "notes": study.notes,
        "images": [{"name": n, "data": base64.b64encode(b).decode("ascii")} for n, b in images.items()],
    }
    # JSON inside <script>: no "</script>" (or any tag) can close it early.
    text = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))), autoescape=True)
    page = environment.get_template("report.html.j2").render(
        title=f"{study.name}: comparison report", spec=study.experiment.spec,
        summary=_summary(study), version=__version__, units=units_line(study, "compared with" in columns),
        data_json=Markup(text), by_config=_plain_table(by_config))
    return page.encode("utf-8")


def _plain_table(table: pd.DataFrame | None) -> dict | None:
    """A small table the template writes as plain HTML (jinja escapes every cell)."""
    if table is None:
        return None
    return {"columns": list(table.columns),
            "rows": [["–" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in row]
                     for row in table.itertuples(index=False)]}


def _summary(study: Study) -> str:
    states = [r.state for r in study.records]
    parts = [f"{states.count(s)} {s}" for s in dict.fromkeys(states)]
    return f"{len(states)} run(s): {', '.join(parts)}"


def markdown_page(study: Study, table: pd.DataFrame, images: dict[str, bytes],
                  by_config: pd.DataFrame | None = None) -> bytes:
    lines = [f"# {markdown_text(study.name)}: comparison report", "",
             f"Spec: {markdown_text(study.experiment.spec)}  ",
             f"{markdown_text(_summary(study))}. The per-question view, sortable table and per-category accuracy "
             "are in report.html (one file; open it in a browser).", "",
             units_line(study, "compared with" in table.columns), ""]
    lines += [f"- {markdown_text(note)}" for note in study.notes] + ([""] if study.notes else [])
    lines += [_markdown(table), ""]
    if by_config is not None:
        lines += ["## By configuration (mean ± sd over seeds)", "", _markdown(by_config), ""]
    lines += [f"![{markdown_text(name)}]({quote(name)})" for name in images]
    return ("\n".join(lines) + "\n").encode("utf-8")


