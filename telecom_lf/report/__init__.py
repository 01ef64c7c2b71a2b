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

from .. import lock, rundir
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
from .tables import comparison_table, config_table, swept_arguments, terminal_table

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


def write_report(root: Path, out: Path | None = None) -> Report:
    """report.html, report.md, report.csv and the PNGs, all or none, under the report's lock."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else rundir.Experiment(root).report_dir
    study = gather(root)
    table = comparison_table(study)
    images = plots(study)
    by_config = replicas.table(study, study.configs) if study.configs else None
    files: dict[Path, bytes] = {out / "report.csv": table.to_csv(index=False).encode("utf-8"),
                                out / "report.md": markdown_page(study, table, images, by_config),
                                out / "report.html": html_page(study, table, images, root, out, by_config)}
    if by_config is not None:
        files[out / "report_by_config.csv"] = by_config.to_csv(index=False).encode("utf-8")
    files.update({out / name: blob for name, blob in images.items()})
    out.mkdir(parents=True, exist_ok=True)
    with lock.hold(out, f"tlf report of {study.name}", wait=True):   # short: queue, never refuse
        write_all(files)
        earlier = [*out.glob("metrics_vs_*.png"), *(out / n for n in ("loss.png", "selection.png", "replicas.png",
                                                                       "report_by_config.csv"))]
        for stale in earlier:   # an earlier shape of the report
            if stale not in files:
                stale.unlink(missing_ok=True)
    terminal = terminal_table(study) + (f"\n\nby configuration (mean ± sd over seeds):\n{config_table(by_config)}"
                                        if by_config is not None else "")
    terminal += "".join(f"\nnote: {note}" for note in study.notes)
    return Report(out, out / "report.md", out / "report.html", terminal, table)
