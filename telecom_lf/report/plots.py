"""The report's plots as PNG bytes: loss by epoch, checkpoint selection, metrics along each sweep axis."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from dataclasses import dataclass

from . import replicas
from .study import PLOT_METRICS, RunRecord, Study, _clip, _number, metric_column
from .tables import _cell, _text

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
    figure, axis = _pyplot().subplots(figsize=(8, 4.5), layout="constrained")
    for number, record in enumerate(curves):
        epochs, _steps, losses = zip(*record.losses)
        axis.plot(epochs, losses, marker=MARKERS[number % len(MARKERS)], markevery=max(1, len(epochs) // 12),
                  color=f"C{number % 10}", linestyle="--" if record.baseline else "-", label=record.title)
    axis.set_ylim(bottom=0)     # from zero: 6.50 to 6.675 must not look like a fall
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss")
    silent = [r.name for r in records if not r.losses]
    axis.set_title("Training loss by epoch" + (f" ({len(curves)} of {len(records)} runs logged a loss; none yet: "
                                               f"{_clip(', '.join(silent), 70)})" if silent else ""), fontsize=10)
    _legend_outside(figure, axis)
    axis.grid(alpha=0.3)
    return _png(figure)


# Each series its own colour AND marker (telling true from false must not rest on a dash); the
# upstream baseline is a black dashed line, named in the legend.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _legend_outside(figure, axis) -> None:
    """One legend for the figure, below the axes, never over the data points."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=7,
                      frameon=False)


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
        held = ", ".join(
            f"{' + '.join(a['arguments'])}={_value_text(tuple(record.point.get(k) for k in a['arguments']))}"
            for a in others
        )
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
    figure, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(5.2 * len(PLOT_METRICS), 4.6), squeeze=False,
                                layout="constrained")
    baseline = next((r for r in study.records if r.baseline), None)
    labels = list(dict.fromkeys(x for s in series for x, _ in s.points))
    # A/B points are separate comparisons with the base, and categories (true/false, q_proj/all) have
    # no order between them: no line joins either. Only a numeric grid axis is a curve.
    joined = axis["kind"] != "vary" and all(_number(v) for r in study.records for v in
                                             (r.point.get(k) for k in axis["arguments"]) if v is not None)
    for plot, metric in zip(axes[0], PLOT_METRICS):
        top = 0.0
        number = 0
        for dataset in study.sets:
            for line in series:
                shown = [(labels.index(x), r.row[metric_column(metric, dataset)]) for x, r in line.points
                         if r.row.get(metric_column(metric, dataset)) is not None]
                if shown:
                    xs, ys = zip(*shown)
                    plot.plot(xs, ys, marker=MARKERS[number % len(MARKERS)], markersize=7, color=f"C{number % 10}",
                              linestyle="-" if joined else "none",
                              label=f"{dataset}{f' ({line.name})' if line.name else ''}")
                    top = max(top, *ys)
                number += 1
        for style, dataset in zip(((0, (4, 3)), (0, (1, 2)), (0, (6, 2, 1, 2))), study.sets):
            value = baseline.row.get(metric_column(metric, dataset)) if baseline else None
            if value is not None:
                plot.axhline(value, linestyle=style, linewidth=1.2, color="black",
                             label=f"baseline {baseline.label or baseline.name}, {dataset}")
                top = max(top, value)
            if metric == "acc" and dataset in study.ceiling:
                plot.axhline(study.ceiling[dataset], linestyle=style, linewidth=1.5, color="tab:gray",
                             label=f"best possible, {dataset}")
                top = max(top, study.ceiling[dataset])
        plot.set_ylim(0, max(5.0, top * 1.12))          # never a degenerate axis, 0 always shown
        plot.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
        plot.set_xlim(-0.5, len(labels) - 0.5)
        plot.set_xlabel(axis_title(axis))
        plot.set_ylabel(f"{metric} (%)")
        plot.grid(alpha=0.3)
    _legend_outside(figure, axes[0][0])
    kind = {"vary": "one at a time against the A/B base", "zip": "moved together", "grid": "grid"}[axis["kind"]]
    figure.suptitle(f"{study.name}: metrics against {axis_title(axis)} ({kind})", fontsize=10)
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
    figure, axis = _pyplot().subplots(figsize=(8, 4.5), layout="constrained")
    top = 0.0
    for index, record in enumerate(chosen):
        points = [(c["step"], c[metric]) for c in record.selection["checkpoints"]
                  if isinstance(c, dict) and _number(c.get("step")) and _number(c.get(metric))]
        if not points:
            continue
        steps, values = zip(*points)
        axis.plot(steps, values, marker=MARKERS[index % len(MARKERS)], color=f"C{index % 10}", label=record.title)
        pick = record.selection["chosen"]
        if _number(pick.get(metric)):
            axis.plot([pick["step"]], [pick[metric]], marker="*", markersize=16, color=f"C{index}",
                      markeredgecolor="black", linestyle="none")
        top = max(top, *values)
    axis.set_ylim(0, max(5.0, top * 1.12))
    axis.set_xlabel("training step (checkpoint)")
    axis.set_ylabel(f"{metric} (%) on {on}")
    axis.set_title(f"Checkpoint selection: {metric} on {on} per checkpoint (★ the one chosen)", fontsize=10)
    _legend_outside(figure, axis)
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
    # With replicas (seeds:), each configuration is one point: its replicas' mean.
    points = dataclasses.replace(study, records=replicas.mean_records(study.configs)) if study.configs else study
    for axis in study.axes:
        image = axis_plot(points, axis)
        if image:
            images[axis_file(axis)] = image
    spread = replicas.plot(study, study.configs)
    if spread:
        images["replicas.png"] = spread
    return images


