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

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import lock, paths, rundir, tracking
from ..errors import TlfError
from ..fsutil import write_all
from . import plots as plots_module
from . import replicas, verdicts
from . import study as study_module
from .page import html_page, markdown_page, units_line
from .plots import axis_file, axis_plot, axis_title, loss_plot, plots, selection_plot
from .study import (
    DELTA_METRICS,
    FIGURES,
    METRICS,
    PLOT_METRICS,
    TERMINAL_METRICS,
    RunRecord,
    Study,
    delta_column,
    interval_column,
    loss_curve,
    metric_column,
    p_column,
    runtime_figures,
    safetensors_parameters,
    training_segments,
)
from .tables import comparison_table, config_table, inert_csv, swept_arguments, terminal_table

__all__ = [
    "plots_module",
    "study_module",
    "verdicts",
    "DELTA_METRICS",
    "FIGURES",
    "METRICS",
    "PLOT_METRICS",
    "TERMINAL_METRICS",
    "Report",
    "RunRecord",
    "Study",
    "axis_file",
    "axis_plot",
    "axis_title",
    "comparison_table",
    "delta_column",
    "interval_column",
    "p_column",
    "gather",
    "html_page",
    "loss_curve",
    "loss_plot",
    "markdown_page",
    "metric_column",
    "plots",
    "runtime_figures",
    "safetensors_parameters",
    "selection_plot",
    "swept_arguments",
    "terminal_table",
    "training_segments",
    "units_line",
    "write_report",
]


def gather(root: Path) -> Study:
    """Every run of the experiment at ``root``, with each comparison tested and each run's loss judged."""
    root = Path(root).resolve()
    return verdicts.judge(study_module.read(root), root)


@dataclass
class Report:
    directory: Path
    markdown: Path
    html: Path
    terminal: str          # the table for a terminal, then the notes
    table: pd.DataFrame
    tracker: str | None = None   # the command that opens the experiment's tracker (tracking:)


# What earlier versions wrote into <experiment>/report before it carried a .tlf-owned list.
LEGACY_REPORT_FILES = ("report.csv", "report.md", "report.html", "report_by_config.csv", "loss.png", "selection.png",
                       "replicas.png")


def report_directory(root: Path, out: Path | None, force: bool) -> tuple[Path, set[str]]:
    """Where the report goes and which files tlf wrote there before (those, and only those, it may
    remove). The experiment's own report/ is tlf's; a --report-dir tlf did not write is the user's:
    refused unless --force, and then tlf writes its files beside theirs and deletes none of theirs."""
    if out is None:
        out = rundir.Experiment(root).report_dir
        if out.is_symlink():
            raise TlfError(f"{out}: is a symbolic link; tlf writes the report only into the experiment's own "
                           "report/ directory (remove the link, or give --report-dir)")
        legacy = set(LEGACY_REPORT_FILES) | {p.name for p in out.glob("metrics_vs_*.png")}
    else:
        out = Path(out).absolute()
        legacy = set()
        if out.exists() and not out.is_dir():
            raise TlfError(f"--report-dir {out}: is a file, not a directory")
        if out.exists() and any(out.iterdir()) and paths.owner(out) != "report" and not force:
            raise TlfError(f"--report-dir {out}: exists, is not empty and holds no report tlf wrote; pass --force "
                           "to write the report's files into it (tlf never deletes files it did not write)")
    marker = paths.read_marker(out)
    earlier = set(marker.get("files", [])) if marker and marker.get("kind") == "report" else legacy
    return out, {name for name in earlier if isinstance(name, str) and "/" not in name and name not in ("", ".", "..")}


def write_report(root: Path, out: Path | None = None, force: bool = False) -> Report:
    """report.html, report.md, report.csv and the PNGs, all or none, under the report's lock."""
    root = Path(root).resolve()
    out, earlier = report_directory(root, out, force)
    study = gather(root)
    table = comparison_table(study)
    images = plots(study)
    by_config = replicas.table(study, study.configs) if study.configs else None
    files: dict[Path, bytes] = {out / "report.csv": inert_csv(table),
                                out / "report.md": markdown_page(study, table, images, by_config),
                                out / "report.html": html_page(study, table, images, root, out, by_config)}
    if by_config is not None:
        files[out / "report_by_config.csv"] = inert_csv(by_config)
    files.update({out / name: blob for name, blob in images.items()})
    for path in files:
        paths.check_output_file(path, "")
    files[out / paths.MARKER] = paths.marker("report", [p.name for p in files])
    out.mkdir(parents=True, exist_ok=True)
    with lock.hold(out, f"tlf report of {study.name}", wait=True):   # short: queue, never refuse
        write_all(files)
        for name in earlier - {p.name for p in files}:   # an earlier shape of the report
            stale = out / name
            if stale.is_file() or stale.is_symlink():
                stale.unlink(missing_ok=True)
    terminal = terminal_table(study) + (f"\n\nby configuration (mean ± sd over seeds):\n{config_table(by_config)}"
                                        if by_config is not None else "")
    terminal += "".join(f"\nnote: {note}" for note in study.notes)
    terminal += _track_report(root, [out / "report.html", out / "report.md", out / "report.csv"], study, table)
    return Report(out, out / "report.md", out / "report.html", terminal, table, tracking.ui_command(root))


def _track_report(root: Path, report_files: list[Path], study: Study, table: pd.DataFrame) -> str:
    """The report into the experiment's tracker (tracking: mlflow): a line for the terminal. The
    report on disk is the study's record; a tracker that refuses is said, not fatal."""
    try:
        done = tracking.log_report(root, report_files, _rows(table), run_verdicts(study, table))
    except Exception as error:   # the tracker's own: a locked store, a server that is down, mlflow not here
        return f"\nnote: the report was not attached to the tracker: {type(error).__name__}: {error}"
    return f"\n{done}" if done else ""


def _rows(table: pd.DataFrame) -> dict[str, dict]:
    """run -> its row of the comparison table, as JSON values (gaps as null)."""
    import json

    return {str(row["run"]): row for row in json.loads(table.to_json(orient="records", force_ascii=False))}


def run_verdicts(study: Study, table: pd.DataFrame) -> dict[str, str]:
    """run -> its paired comparison with its reference, in words: each metric's Δ with its interval
    and p, per set, as the table has them."""
    if "compared with" not in table:
        return {}
    found = {}
    for _index, row in table.iterrows():
        if not row.get("compared with"):
            continue
        clauses = []
        for dataset in study.sets:
            for metric in DELTA_METRICS:
                delta = row.get(delta_column(metric, dataset))
                if delta is None or pd.isna(delta):
                    continue
                extra = "".join(f", {label} {row[column]}" for label, column in
                                (("95% CI", interval_column(metric, dataset)), ("p", p_column(metric, dataset)))
                                if column in table and not pd.isna(row[column]))
                clauses.append(f"Δ{metric} [{dataset}] {delta} pp{extra}")
        found[str(row["run"])] = f"vs {row['compared with']}: " + "; ".join(clauses)
    return found
