"""Every run of an experiment, from what is on disk -> one comparison: ``report.html`` (one
self-contained page), ``report.md``, ``report.csv``, the plots as PNG files, and a terminal table.

What each run is compared with is its *reference*: in a one-factor-at-a-time (``vary``) sweep
the A/B base it varies one argument of, else the ``upstream-defaults`` baseline when there is
one; Δ columns are percentage points against it. Plots follow the sweep's axes: one per grid
argument (the other axes as series), one per zip group (its arguments move together), one per
vary argument with the base point on it. Missing or failed runs appear with their state (and a
failed step's cause and log); they never stop the report.
"""

from __future__ import annotations

import io
import json
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import lock, rundir, score
from .errors import TlfError
from .fsutil import write_all

# (metric, what it is): every one a percentage of its predict set (LLaMA-Factory's BLEU/ROUGE x100)
METRICS = {"acc": "exact match (both sides stripped)",
           "long_recall": "exact match among answers longer than 10 characters (the blog's Recall)",
           "rouge-1": "ROUGE-1 F over jieba words, as LLaMA-Factory computes it",
           "bleu-4": "character BLEU-4, as LLaMA-Factory computes it",
           "item_f1": "F1 over the |-separated answer items"}
DELTA_METRICS = ("acc", "rouge-1")
PLOT_METRICS = ("acc", "rouge-1")
TERMINAL_METRICS = ("acc", "long_recall", "rouge-1")
FIGURES = {"trainable_params": "trainable params", "train_runtime_s": "train time (s)",
           "samples_per_s": "samples/s", "peak_mem_gb": "peak mem (GB)", "final_loss": "final loss"}
LOWER_IS_BETTER = ("final loss", "train time (s)", "peak mem (GB)")


def metric_column(metric: str, dataset: str) -> str:
    return f"{metric} % [{dataset}]"


def delta_column(metric: str, dataset: str) -> str:
    return f"Δ{metric} pp [{dataset}]"


@dataclass
class RunRecord:
    name: str
    label: str | None
    state: str
    point: dict
    baseline: bool
    reference: str | None                 # the run this one is compared with (Δ columns)
    row: dict                             # its cells of the comparison table
    vary_base: str | None = None          # in a vary sweep: the A/B base this run changes one argument of
    losses: list[tuple[float, int, float]] = field(default_factory=list)   # (epoch, step, loss), each step once
    failure: dict | None = None           # a failed step: step, cause, log
    answers: dict = field(default_factory=dict)   # predict set -> (predicted, label) per row, in row order
    by_category: dict = field(default_factory=dict)   # predict set -> category -> accuracy %
    segments: int = 0                     # training segments (more than one: resumed)
    selection: dict | None = None         # selection.json: each checkpoint's dev score and the choice

    @property
    def title(self) -> str:
        return f"{self.name} ({self.label})" if self.label else self.name


@dataclass
class Study:
    experiment: dict
    axes: list[dict]
    records: list[RunRecord]
    questions: dict                       # predict set -> [{question, label, category}]
    notes: list[str]
    ceiling: dict = field(default_factory=dict)   # predict set -> best possible acc %, where the data says

    @property
    def sets(self) -> list[str]:
        return list(self.experiment["predict_sets"])


# ---------------------------------------------------------------- reading what the runs wrote


def safetensors_parameters(path: Path) -> int | None:
    """Parameter count from a safetensors header (no tensor is loaded)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        return sum(_product(t["shape"]) for name, t in header.items() if name != "__metadata__")
    except (OSError, ValueError, struct.error, KeyError, TypeError):
        return None


def _product(shape) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _trainable_from_logs(run_dir: Path) -> int | None:
    for log in sorted((run_dir / rundir.LOGS).glob("*")) if (run_dir / rundir.LOGS).is_dir() else []:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        marker = text.rfind("trainable params: ")
        if marker >= 0:
            digits = text[marker + len("trainable params: "):].split("|", 1)[0].strip().replace(",", "")
            if digits.isdigit():
                return int(digits)
    return None


def _trainer_log(train_dir: Path) -> list[dict]:
    """LLaMA-Factory's trainer_log.jsonl entries (a torn or foreign line is ignored)."""
    path = train_dir / "trainer_log.jsonl"
    entries = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict) and _number(entry.get("current_steps")):
                entries.append(entry)
    return entries


def training_segments(entries: list[dict]) -> list[list[dict]]:
    """The log split where training started again: LLaMA-Factory appends to trainer_log.jsonl on
    a resume, restarting its clock and re-logging the steps after the checkpoint it resumed from."""
    segments: list[list[dict]] = []
    for entry in entries:
        previous = segments[-1][-1] if segments else None
        clock = rundir.elapsed_seconds(entry.get("elapsed_time"))
        last_clock = rundir.elapsed_seconds((previous or {}).get("elapsed_time"))
        # Not "<=": LLaMA-Factory logs the last step once more with the run's summary.
        restarted = previous is not None and (entry["current_steps"] < previous["current_steps"]
                                              or (clock is not None and last_clock is not None and clock < last_clock))
        if previous is None or restarted:
            segments.append([])
        segments[-1].append(entry)
    return segments


def loss_curve(segments: list[list[dict]]) -> list[tuple[float, int, float]]:
    """(epoch, step, loss) with each step once: a step logged again after a resume counts as the
    later (surviving) run's."""
    by_step: dict[int, tuple[float, int, float]] = {}
    for entry in (e for segment in segments for e in segment):
        if _number(entry.get("loss")):
            step = int(entry["current_steps"])
            epoch = float(entry["epoch"]) if _number(entry.get("epoch")) else float(step)
            by_step[step] = (epoch, step, float(entry["loss"]))
    return [by_step[step] for step in sorted(by_step)]


def runtime_figures(segments: list[list[dict]], results: dict) -> tuple[float | None, float | None]:
    """Training time and samples/s over every segment. train_results.json covers only the last
    (its samples/s divides all the run's samples by that segment's time); the earlier segments
    count up to their last logged step (the minutes between that and the kill are not known)."""
    runtime, rate = results.get("train_runtime"), results.get("train_samples_per_second")
    if not _number(runtime) or len(segments) < 2:
        return (runtime if _number(runtime) else None), (rate if _number(rate) else None)
    earlier = sum(rundir.elapsed_seconds(segment[-1].get("elapsed_time")) or 0.0 for segment in segments[:-1])
    total = runtime + earlier
    samples = rate * runtime if _number(rate) else None
    return round(total, 2), (round(samples / total, 3) if samples is not None and total else None)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_object(path: Path) -> dict:
    """A JSON object written by LLaMA-Factory or a step; anything else reads as nothing."""
    value = rundir.read_json(path)
    return value if isinstance(value, dict) else {}


def _state(run_dir: Path) -> tuple[str, dict | None]:
    """The run's state, and for a failed one the step, its cause and its log."""
    if not (run_dir / rundir.MANIFEST).exists():
        return "missing", None
    run = rundir.open_run(run_dir)
    state = rundir.state(run)
    failed = rundir.failed_steps(run, rundir.step_records(run))
    if state != "failed" or not failed:
        return state, None
    step, record = next(iter(failed.items()))
    return state, {"step": step, "cause": record.get("cause") or "no error line in the log", "log": record.get("log")}


def _answers(run_dir: Path, dataset: str) -> list[tuple[str, str]]:
    """(predicted, label) per row of a predict set, in row order."""
    path = run_dir / rundir.predict_dir(dataset) / "generated_predictions.jsonl"
    if not path.exists():
        return []
    try:
        return [(row.predict, row.label) for row in score.read_predictions(path, skip_bad=True).rows]
    except TlfError:   # an empty or unreadable file: the run shows no answers, the report goes on
        return []


def _record(root: Path, run: dict, sets: list[str], reference: str | None, vary_base: str | None) -> RunRecord:
    run_dir = root / run["name"]
    train_dir = run_dir / rundir.TRAIN_DIR
    results = _read_object(train_dir / "train_results.json")
    scores = _read_object(run_dir / rundir.SCORES).get("sets")
    scores = {k: v for k, v in scores.items() if isinstance(v, dict)} if isinstance(scores, dict) else {}
    adapter = train_dir / "adapter_model.safetensors"
    weights = adapter if adapter.exists() else train_dir / "model.safetensors"
    log = _trainer_log(train_dir)
    segments = training_segments(log)
    losses = loss_curve(segments)
    runtime, rate = runtime_figures(segments, results)
    # LLaMA-Factory logs memory only with RECORD_VRAM=1 (tlf's steps set it).
    peak = [e["vram_allocated"] for e in log if _number(e.get("vram_allocated")) and e["vram_allocated"] > 0]
    state, failure = _state(run_dir)
    row = {
        "trainable_params": _trainable_from_logs(run_dir) or (safetensors_parameters(adapter) if adapter.exists() else None),
        "adapter_mb": round(weights.stat().st_size / 2**20, 3) if weights.exists() else None,
        "train_runtime_s": runtime, "samples_per_s": rate,
        "peak_mem_gb": max(peak) if peak else None,
        "final_loss": losses[-1][2] if losses else (results.get("train_loss") if _number(results.get("train_loss")) else None),
    }
    for dataset in sets:
        for metric in METRICS:
            value = scores.get(dataset, {}).get(metric)
            row[metric_column(metric, dataset)] = value if _number(value) else None
    by_category = {d: {c: v.get("acc") for c, v in (scores.get(d, {}).get("by_category") or {}).items()
                       if isinstance(v, dict)} for d in sets}
    selection = _read_object(run_dir / rundir.SELECTION) or None
    if selection and not (isinstance(selection.get("chosen"), dict) and isinstance(selection.get("checkpoints"), list)):
        selection = None
    return RunRecord(name=run["name"], label=run.get("label"), state=state, point=run.get("point") or run["varied"],
                     baseline=bool(run.get("baseline")), reference=reference, vary_base=vary_base, row=row,
                     losses=losses, failure=failure,
                     answers={d: _answers(run_dir, d) for d in sets}, by_category=by_category, segments=len(segments),
                     selection=selection)


def _reference(run: dict, names: list[str], baseline: str | None) -> str | None:
    """A vary point's base; else the upstream baseline (never the baseline itself)."""
    if run.get("reference") in names:
        return run["reference"]
    return baseline if baseline and run["name"] != baseline else None


def gather(root: Path) -> Study:
    experiment = rundir.Experiment(root).read()
    sets = experiment["predict_sets"]
    runs = experiment["runs"]
    names = [r["name"] for r in runs]
    baseline = next((r["name"] for r in runs if r.get("baseline")), None)
    records = [_record(root, run, sets, _reference(run, names, baseline),
                       run.get("reference") if run.get("reference") in names else None) for run in runs]
    axes = [a for a in experiment.get("axes") or _axes_from_varied(runs) if isinstance(a, dict) and a.get("arguments")]
    questions = {d: _questions(root, runs, d) for d in sets}
    ceiling = _ceiling(root, runs, sets)
    notes = _notes(records, questions, _instruction(root, runs)) + _ceiling_notes(ceiling)
    return Study(experiment, axes, records, questions, notes, {d: c["acc"] for d, c in ceiling.items()})


def _axes_from_varied(runs: list[dict]) -> list[dict]:
    """An experiment rendered before axes were recorded: one grid axis per varied argument."""
    return [{"kind": "grid", "arguments": [key]} for key in sorted({k for r in runs for k in r.get("varied", {})})]


def _questions(root: Path, runs: list[dict], dataset: str) -> list[dict]:
    """The predict set's rows as the runs saw them: question, label, category (from the split)."""
    for run in runs:
        run_dir = root / run["name"]
        manifest = _read_object(run_dir / rundir.MANIFEST)
        entry = _read_object(run_dir / rundir.DATASETS_FILE).get(dataset)
        if not manifest.get("dataset_dir") or not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            continue
        records = rundir.read_json(Path(manifest["dataset_dir"]) / entry["file_name"])
        if not isinstance(records, list):
            continue
        categories = _categories(manifest.get("split_manifest"), dataset)
        return [{"question": str(r.get("instruction", "")) + ("\n" + str(r["input"]) if r.get("input") else ""),
                 "label": str(r.get("output", "")), "category": categories[i] if i < len(categories) else ""}
                for i, r in enumerate(records) if isinstance(r, dict)]
    return []


def _split_manifests(root: Path, runs: list[dict]):
    """Each run's split manifest (the data's record of its subsets), as far as it is readable."""
    for run in runs:
        manifest = _read_object(root / run["name"] / rundir.MANIFEST)
        yield _read_object(Path(manifest["split_manifest"])) if isinstance(manifest.get("split_manifest"), str) else {}


def _ceiling(root: Path, runs: list[dict], sets: list[str]) -> dict:
    """Best possible exact match per predict set, where the split manifest records one (synthetic data)."""
    for split in _split_manifests(root, runs):
        ceiling = split.get("ceiling")
        if isinstance(ceiling, dict):
            return {d: {"acc": ceiling[d]["acc"], "why": _one_line(ceiling[d].get("why"))} for d in sets
                    if isinstance(ceiling.get(d), dict) and _number(ceiling[d].get("acc"))
                    and 0 <= ceiling[d]["acc"] <= 100}     # a hand-edited manifest: NaN, 1e308, -5 are no score
    return {}


def _one_line(text) -> str:
    return _clip(" ".join(text.split()), 300) if isinstance(text, str) else ""


def _ceiling_notes(ceiling: dict) -> list[str]:
    by_value: dict = {}
    for dataset, entry in ceiling.items():
        by_value.setdefault((entry["acc"], entry["why"]), []).append(dataset)
    return [f"best possible acc on {' and '.join(sets)}: {value:g} %" + (f" ({why})" if why else "")
            for (value, why), sets in by_value.items()]


def _instruction(root: Path, runs: list[dict]) -> str | None:
    """The data's instruction wrapper (``...{question}...``), as the split manifest recorded it."""
    for split in _split_manifests(root, runs):
        if isinstance(split.get("instruction"), str):
            return split["instruction"]
    return None


def _categories(split_manifest, dataset: str) -> list[str]:
    if not isinstance(split_manifest, str):
        return []
    try:
        return score.categories_for(Path(split_manifest), dataset)
    except TlfError:
        return []


def _winner(records: list[RunRecord]) -> list[str]:
    """With checkpoint selection, the sweep's best run is the one with the best dev score (its
    test scores are reported, never used to choose)."""
    scored = [(r.selection["chosen"].get(r.selection.get("metric")), r) for r in records if r.selection]
    scored = [(value, r) for value, r in scored if _number(value)]
    if len(scored) < 2:
        return []
    best = max(value for value, _ in scored)
    winner = next(r for value, r in scored if value == best)
    metric, on = winner.selection.get("metric"), winner.selection.get("on")
    return [f"Best run by {metric} on the dev set {on} (how select: chooses; the test sets did not take part): "
            f"{winner.title}, checkpoint-{winner.selection['chosen'].get('step')}, {best} %."]


def _notes(records: list[RunRecord], questions: dict, instruction: str | None) -> list[str]:
    """What a reader should know before believing the numbers."""
    notes = _winner(records)
    for record in records:
        constant = {d: a[0][0].strip() for d, a in record.answers.items()
                    if len(a) > 1 and len({predicted.strip() for predicted, _ in a}) == 1}
        for text in dict.fromkeys(constant.values()):
            sets = [d for d, t in constant.items() if t == text]
            what = ("an empty answer" if not text else f"the instruction's own text, {_clip(text, 50)!r}"
                    if _is_instruction(text, instruction, questions.get(sets[0])) else f"the same text, {_clip(text, 50)!r}")
            notes.append(f"{record.title} answers every question of {' and '.join(sets)} with {what}: it has not "
                         "learnt the task, and its scores measure that one string, not the question.")
        if record.segments > 1:
            notes.append(f"{record.title} trained in {record.segments} segments (resumed from a checkpoint); its "
                         "loss curve counts each step once, and its time and samples/s cover every segment.")
        if record.failure:
            notes.append(f"{record.title} failed in {record.failure['step']}: {record.failure['cause']} "
                         f"(log: {record.failure['log']})")
    return notes


def _is_instruction(text: str, instruction: str | None, rows: list[dict] | None) -> bool:
    """The answer is the instruction: its wrapper without the question, or a question's own text."""
    from .data import normalise_question

    folded = normalise_question(text)
    if not folded:
        return False
    wrapper = normalise_question(instruction.replace("{question}", "")) if instruction else None
    return folded == wrapper or any(folded in normalise_question(row["question"]) for row in (rows or [])[:20])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    body = ["| " + " | ".join(_text(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
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
    rows = [[r.name, *[r.label or ""] * labelled, r.state] + [_text(r.row.get(metric_column(m, d))) for d in study.sets
                                                               for m in TERMINAL_METRICS] + [_text(r.row.get("final_loss"))]
            for r in study.records]
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


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def loss_plot(records: list[RunRecord]) -> bytes | None:
    """Loss against epochs, so runs with different batch sizes (steps) line up; each step once."""
    curves = [r for r in records if r.losses]
    if not curves:
        return None
    figure, axis = _pyplot().subplots(figsize=(8, 4.5))
    for record in curves:
        epochs, _steps, losses = zip(*record.losses)
        axis.plot(epochs, losses, marker="." if len(epochs) < 30 else None, label=record.title)
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss")
    silent = [r.name for r in records if not r.losses]
    axis.set_title("Training loss by epoch" + (f" ({len(curves)} of {len(records)} runs logged a loss; none yet: "
                                               f"{_clip(', '.join(silent), 70)})" if silent else ""), fontsize=10)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


@dataclass
class Series:
    name: str
    points: list[tuple[str, RunRecord]]   # (x label, run) in x order


def _value_text(values: tuple) -> str:
    """Values as the spec writes them: true/false, numbers, text."""
    return " / ".join(json.dumps(v) if isinstance(v, bool) or v is None else _text(_cell(v)) for v in values)


def _vary_series(study: Study, axis: dict) -> list[Series]:
    """Each A/B base with the runs that change this argument of it; the base first, marked."""
    arguments = axis["arguments"]
    bases = [r for r in study.records if not r.baseline and r.vary_base is None]
    series = []
    for base in bases:
        values = tuple(base.point.get(k) for k in arguments)
        others = [r for r in study.records if r.vary_base == base.name
                  and tuple(r.point.get(k) for k in arguments) != values]
        if others:
            points = [(f"{_value_text(values)} (A/B base)", base)]
            points += [(_value_text(tuple(r.point.get(k) for k in arguments)), r) for r in others]
            series.append(Series(base.name if len(bases) > 1 else "", points))
    return series


def _grid_series(study: Study, axis: dict) -> list[Series]:
    """Runs along this axis, one series per combination of the other grid and zip axes (held)."""
    others = [a for a in study.axes if a is not axis and a["kind"] in ("grid", "zip")]
    groups: dict[str, list[RunRecord]] = {}
    for record in [r for r in study.records if not r.baseline and r.vary_base is None]:
        held = ", ".join(f"{' + '.join(a['arguments'])}={_value_text(tuple(record.point.get(k) for k in a['arguments']))}"
                         for a in others)
        groups.setdefault(held, []).append(record)
    series = []
    for held, members in groups.items():
        keyed = [(tuple(r.point.get(k) for k in axis["arguments"]), r) for r in members]
        if axis["kind"] == "grid":           # a zip keeps the order its lists were written in
            keyed.sort(key=lambda item: _axis_order(item[0]))
        series.append(Series(held, [(_value_text(values), r) for values, r in keyed]))
    return series


def _axis_order(values: tuple) -> tuple:
    """Numbers in numeric order, then everything else by its text."""
    return tuple((0, v, "") if _number(v) else (1, 0, json.dumps(v)) for v in values)


def axis_plot(study: Study, axis: dict) -> bytes | None:
    series = _vary_series(study, axis) if axis["kind"] == "vary" else _grid_series(study, axis)
    if not any(len(s.points) > 1 or axis["kind"] == "vary" for s in series):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(5.2 * len(PLOT_METRICS), 4), squeeze=False)
    baseline = next((r for r in study.records if r.baseline), None)
    labels = list(dict.fromkeys(x for s in series for x, _ in s.points))
    for plot, metric in zip(axes[0], PLOT_METRICS):
        top = 0.0
        for index, dataset in enumerate(study.sets):
            color = f"C{index}"
            for number, line in enumerate(series):
                shown = [(labels.index(x), r.row[metric_column(metric, dataset)]) for x, r in line.points
                         if r.row.get(metric_column(metric, dataset)) is not None]
                if shown:
                    xs, ys = zip(*shown)
                    # A/B points are separate comparisons with the base: no line joins them.
                    style = "none" if axis["kind"] == "vary" else ["-", "--", ":", "-."][number % 4]
                    plot.plot(xs, ys, marker="o", markersize=7, linestyle=style, color=color,
                              label=f"{dataset}{f' ({line.name})' if line.name else ''}")
                    top = max(top, *ys)
            value = baseline.row.get(metric_column(metric, dataset)) if baseline else None
            if value is not None:
                plot.axhline(value, linestyle=(0, (4, 3)), linewidth=1, color=color, alpha=0.7,
                             label=f"{baseline.label or baseline.name}, {dataset}")
                top = max(top, value)
            if metric == "acc" and dataset in study.ceiling:
                plot.axhline(study.ceiling[dataset], linestyle=":", linewidth=1.5, color=color,
                             label=f"best possible, {dataset}")
                top = max(top, study.ceiling[dataset])
        plot.set_ylim(0, max(5.0, top * 1.12))          # never a degenerate axis, 0 always shown
        plot.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
        plot.set_xlim(-0.5, len(labels) - 0.5)
        plot.set_xlabel(axis_title(axis))
        plot.set_ylabel(f"{metric} (%)")
        plot.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    kind = {"vary": "one at a time against the A/B base", "zip": "moved together", "grid": "grid"}[axis["kind"]]
    figure.suptitle(f"{study.experiment['experiment']}: metrics against {axis_title(axis)} ({kind})", fontsize=10)
    return _png(figure)


def axis_title(axis: dict) -> str:
    return " + ".join(axis["arguments"])


def axis_file(axis: dict) -> str:
    return "metrics_vs_" + re.sub(r"[^A-Za-z0-9_.+-]+", "_", "+".join(axis["arguments"]))[:150] + ".png"


def selection_plot(records: list[RunRecord]) -> bytes | None:
    """Each run's dev score against the training step, the checkpoint it chose marked."""
    chosen = [r for r in records if r.selection]
    if not chosen:
        return None
    metric, on = chosen[0].selection.get("metric", "acc"), chosen[0].selection.get("on", "dev")
    figure, axis = _pyplot().subplots(figsize=(8, 4.5))
    top = 0.0
    for index, record in enumerate(chosen):
        points = [(c["step"], c[metric]) for c in record.selection["checkpoints"]
                  if isinstance(c, dict) and _number(c.get("step")) and _number(c.get(metric))]
        if not points:
            continue
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o", color=f"C{index}", label=record.title)
        pick = record.selection["chosen"]
        if _number(pick.get(metric)):
            axis.plot([pick["step"]], [pick[metric]], marker="*", markersize=16, color=f"C{index}",
                      markeredgecolor="black", linestyle="none")
        top = max(top, *values)
    axis.set_ylim(0, max(5.0, top * 1.12))
    axis.set_xlabel("training step (checkpoint)")
    axis.set_ylabel(f"{metric} (%) on {on}")
    axis.set_title(f"Checkpoint selection: {metric} on {on} per checkpoint (★ the one chosen)", fontsize=10)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


def plots(study: Study) -> dict[str, bytes]:
    images = {}
    loss = loss_plot(study.records)
    if loss:
        images["loss.png"] = loss
    chosen = selection_plot(study.records)
    if chosen:
        images["selection.png"] = chosen
    for axis in study.axes:
        image = axis_plot(study, axis)
        if image:
            images[axis_file(axis)] = image
    return images


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
        out.append({"index": index, "question": known["question"] if known else "", "label": label.strip(),
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


def html_page(study: Study, table: pd.DataFrame, images: dict[str, bytes], root: Path, out: Path) -> bytes:
    """report.html: one self-contained file (inline CSS, JS and images; no network, no server)."""
    import base64

    import jinja2
    from markupsafe import Markup

    from . import __version__
    from .cluster import resource_dir

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
        title=f"{study.experiment['experiment']}: comparison report", spec=study.experiment.get("spec", ""),
        summary=_summary(study), version=__version__, units=units_line(study, "compared with" in columns),
        data_json=Markup(text))
    return page.encode("utf-8")


def _summary(study: Study) -> str:
    states = [r.state for r in study.records]
    parts = [f"{states.count(s)} {s}" for s in dict.fromkeys(states)]
    return f"{len(states)} run(s): {', '.join(parts)}"


def markdown_page(study: Study, table: pd.DataFrame, images: dict[str, bytes]) -> bytes:
    lines = [f"# {study.experiment['experiment']}: comparison report", "",
             f"Spec: `{study.experiment.get('spec', '')}`  ", f"{_summary(study)}. The per-question view, sortable "
             "table and per-category accuracy are in report.html (one file; open it in a browser).", "",
             units_line(study, "compared with" in table.columns), ""]
    lines += [f"- {note}" for note in study.notes] + ([""] if study.notes else [])
    lines += [_markdown(table), ""]
    lines += [f"![{name}]({name})" for name in images]
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass
class Report:
    directory: Path
    markdown: Path
    html: Path
    terminal: str          # the table for a terminal, then the notes
    table: pd.DataFrame


def write_report(root: Path, out: Path | None = None) -> Report:
    """report.html, report.md, report.csv and the PNGs, all or none, under the report's lock."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else rundir.Experiment(root).report_dir
    study = gather(root)
    table = comparison_table(study)
    images = plots(study)
    files: dict[Path, bytes] = {out / "report.csv": table.to_csv(index=False).encode("utf-8"),
                                out / "report.md": markdown_page(study, table, images),
                                out / "report.html": html_page(study, table, images, root, out)}
    files.update({out / name: blob for name, blob in images.items()})
    out.mkdir(parents=True, exist_ok=True)
    with lock.hold(out, f"tlf report of {study.experiment['experiment']}", wait=True):   # short: queue, never refuse
        write_all(files)
        for stale in [*out.glob("metrics_vs_*.png"), out / "loss.png", out / "selection.png"]:   # an earlier shape
            if stale not in files:
                stale.unlink(missing_ok=True)
    terminal = terminal_table(study) + "".join(f"\nnote: {note}" for note in study.notes)
    return Report(out, out / "report.md", out / "report.html", terminal, table)
