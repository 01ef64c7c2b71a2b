"""Every run of an experiment, from what is on disk -> one comparison table and plots.

Missing or failed runs appear as rows with their state; they never stop the report.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import lock, rundir
from .fsutil import atomic_write

METRICS = ["acc", "long_recall", "rouge-1", "bleu-4", "item_f1"]
DELTA_METRICS = ["acc", "rouge-1"]


@dataclass
class RunRecord:
    name: str
    state: str
    varied: dict
    baseline: bool
    row: dict
    losses: list[tuple[int, float]]


def safetensors_parameters(path: Path) -> int | None:
    """Parameter count from a safetensors header (no tensor is loaded)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in tensor["shape"]:
            count *= dim
        total += count
    return total


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
    """LLaMA-Factory's trainer_log.jsonl entries (a torn last line is ignored)."""
    path = train_dir / "trainer_log.jsonl"
    entries = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def _read_object(path: Path) -> dict:
    """A JSON object written by LLaMA-Factory or a step; anything else reads as nothing."""
    value = rundir.read_json(path)
    return value if isinstance(value, dict) else {}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _state(run_dir: Path) -> str:
    if not (run_dir / rundir.MANIFEST).exists():
        return "missing"
    return rundir.state(rundir.open_run(run_dir))


def gather(root: Path) -> tuple[dict, list[RunRecord]]:
    experiment = rundir.Experiment(root).read()
    sets = experiment["predict_sets"]
    records = []
    for run in experiment["runs"]:
        run_dir = root / run["name"]
        train_dir = run_dir / rundir.TRAIN_DIR
        results = _read_object(train_dir / "train_results.json")
        scores = _read_object(run_dir / rundir.SCORES).get("sets")
        scores = {k: v for k, v in scores.items() if isinstance(v, dict)} if isinstance(scores, dict) else {}
        adapter = train_dir / "adapter_model.safetensors"
        weights = adapter if adapter.exists() else train_dir / "model.safetensors"
        log = _trainer_log(train_dir)
        losses = [(int(e["current_steps"]), float(e["loss"])) for e in log
                  if _number(e.get("loss")) and _number(e.get("current_steps"))]
        # LLaMA-Factory logs memory only with RECORD_VRAM=1 (tlf's jobs set it).
        peak = [e["vram_allocated"] for e in log if _number(e.get("vram_allocated")) and e["vram_allocated"] > 0]
        row = {
            "run": run["name"],
            "state": _state(run_dir),
            **{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in run["varied"].items()},
            "trainable_params": _trainable_from_logs(run_dir) or (safetensors_parameters(adapter) if adapter.exists() else None),
            "adapter_mb": round(weights.stat().st_size / 2**20, 3) if weights.exists() else None,
            "train_runtime_s": results.get("train_runtime"),
            "samples_per_s": results.get("train_samples_per_second"),
            "peak_mem_gb": max(peak) if peak else None,
            "final_loss": losses[-1][1] if losses else results.get("train_loss"),
        }
        for dataset in sets:
            for metric in METRICS:
                row[f"{metric}[{dataset}]"] = scores.get(dataset, {}).get(metric)
        records.append(RunRecord(run["name"], row["state"], run["varied"], run["baseline"], row, losses))
    return experiment, records


def comparison_table(experiment: dict, records: list[RunRecord]) -> pd.DataFrame:
    table = pd.DataFrame([r.row for r in records])
    table["trainable_params"] = table["trainable_params"].astype("Int64")  # a count, even beside a missing run
    baseline = next((r for r in records if r.baseline), None)
    if baseline is not None:
        for dataset in experiment["predict_sets"]:
            for metric in DELTA_METRICS:
                column = f"{metric}[{dataset}]"
                base = baseline.row.get(column)
                table[f"Δ{column}"] = [round(v - base, 2) if _present(v) and base is not None else None
                                       for v in table[column]]
    return table


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def loss_plot(records: list[RunRecord]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in records if r.losses]
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for record in curves:
        steps, losses = zip(*record.losses)
        axis.plot(steps, losses, marker="." if len(steps) < 30 else None, label=record.name)
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("training loss")
    axis.set_title("Training loss, all runs")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    blob = _png(figure)
    plt.close(figure)
    return blob


def _present(value) -> bool:
    return value is not None and not pd.isna(value)


def _axis_order(encoded: str) -> tuple:
    """Numbers in numeric order first, then everything else by its JSON text."""
    value = json.loads(encoded)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (not number, value if number else 0, encoded)


def metric_plots(experiment: dict, records: list[RunRecord]) -> dict[str, bytes]:
    """For each varied argument: the chosen metrics on each predict set against its values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arguments = sorted({k for r in records for k in r.varied})
    baseline = next((r for r in records if r.baseline), None)
    plots = {}
    for argument in arguments:
        points = [r for r in records if argument in r.varied]
        values = sorted({json.dumps(r.varied[argument]) for r in points}, key=_axis_order)
        figure, axes = plt.subplots(1, len(DELTA_METRICS), figsize=(5 * len(DELTA_METRICS), 3.8), squeeze=False)
        for axis, metric in zip(axes[0], DELTA_METRICS):
            for dataset in experiment["predict_sets"]:
                column = f"{metric}[{dataset}]"
                shown = [r for r in points if _present(r.row.get(column))]
                axis.scatter([values.index(json.dumps(r.varied[argument])) for r in shown],
                             [r.row[column] for r in shown], label=dataset, alpha=0.8)
                if baseline is not None and _present(baseline.row.get(column)):
                    axis.axhline(baseline.row[column], linestyle="--", linewidth=0.8, color="grey")
            axis.set_xticks(range(len(values)), [json.loads(v) for v in values], rotation=20)
            axis.set_xlabel(argument)
            axis.set_ylabel(metric + " (%)")
            axis.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7, title="predict set (dashed: upstream baseline)", title_fontsize=7)
        figure.suptitle(f"{experiment['experiment']}: metrics against {argument}")
        plots[f"metrics_vs_{argument}.png"] = _png(figure)
        plt.close(figure)
    return plots


def _markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "–"
        return f"{value:g}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_report(root: Path, out: Path | None = None) -> tuple[Path, pd.DataFrame]:
    """Write report.md, report.csv and the PNGs (each whole, atomically); return the .md path."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else rundir.Experiment(root).report_dir
    experiment, records = gather(root)
    table = comparison_table(experiment, records)
    files: dict[str, bytes] = {"report.csv": table.to_csv(index=False).encode("utf-8")}
    images = {}
    loss = loss_plot(records)
    if loss:
        images["loss.png"] = loss
    images.update(metric_plots(experiment, records))
    lines = [f"# {experiment['experiment']}: comparison report", "",
             f"Spec: `{experiment['spec']}`  ", f"Runs: {len(records)} "
             f"({sum(r.state == 'done' for r in records)} done)", "",
             "Metrics in percent on each predict set: acc = exact match (stripped), long_recall = exact "
             "match among labels longer than 10 characters (the blog's Recall), ROUGE-1 and BLEU-4 as "
             "LLaMA-Factory computes them, item_f1 over the `|`-separated answer items. "
             "Δ columns: difference to the `upstream-defaults` run (LLaMA-Factory's own defaults).", "",
             _markdown(table), ""]
    lines += [f"![{name}]({name})" for name in images]
    files["report.md"] = ("\n".join(lines) + "\n").encode("utf-8")
    files.update(images)
    out.mkdir(parents=True, exist_ok=True)
    with lock.hold(out, f"tlf report of {experiment['experiment']}", wait=True):   # short: queue, never refuse
        for name, blob in files.items():
            atomic_write(out / name, blob)
    return out / "report.md", table
