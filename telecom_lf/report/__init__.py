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
    gather,
    loss_curve,
    metric_column,
    runtime_figures,
    safetensors_parameters,
    training_segments,
)
from .tables import comparison_table, swept_arguments, terminal_table

__all__ = [
    "plots_module",
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
    with lock.hold(out, f"tlf report of {study.name}", wait=True):   # short: queue, never refuse
        write_all(files)
        for stale in [*out.glob("metrics_vs_*.png"), out / "loss.png", out / "selection.png"]:   # an earlier shape
            if stale not in files:
                stale.unlink(missing_ok=True)
    terminal = terminal_table(study) + "".join(f"\nnote: {note}" for note in study.notes)
    return Report(out, out / "report.md", out / "report.html", terminal, table)
