"""What the report reads: every run of an experiment, from its records and what its steps wrote,
into one ``Study`` (runs, their table cells, losses, answers, selection, notes)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .. import rundir, score
from ..errors import TlfError
from ..records import ExperimentRecord, RunEntry

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


def interval_column(metric: str, dataset: str) -> str:
    return f"95% CI of Δ{metric} [{dataset}]"


def p_column(metric: str, dataset: str) -> str:
    return f"p of Δ{metric} [{dataset}]"


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
    comparisons: dict = field(default_factory=dict)   # (set, metric) -> the paired test against its reference
    flags: list[str] = field(default_factory=list)    # what is wrong with its training loss, in words
    seed: int | None = None               # a replica's seed (seeds:)
    config: str | None = None             # a replica's configuration (its name without -s<seed>)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.label})" if self.label else self.name


@dataclass
class Study:
    experiment: ExperimentRecord
    axes: list[dict]
    records: list[RunRecord]
    questions: dict                       # predict set -> [{question, label, category}]
    notes: list[str]
    ceiling: dict = field(default_factory=dict)   # predict set -> best possible acc %, where the data says
    configs: list = field(default_factory=list)   # replicas.Configuration per configuration (seeds:), else empty

    @property
    def sets(self) -> list[str]:
        """The predict sets, the test set first: the columns a reader sees first are the verdict's,
        not train_100's (training data in the blog's mode)."""
        first = self.test_set
        return ([first] if first else []) + [s for s in self.experiment.predict_sets if s != first]

    @property
    def name(self) -> str:
        return self.experiment.experiment

    @property
    def test_set(self) -> str | None:
        """The set a best run is judged on without select: the last one named like a test set."""
        written = list(self.experiment.predict_sets)
        return ([s for s in written if "test" in s] or written or [None])[-1]


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
    path = train_dir / rundir.TRAINER_LOG
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


def _open(run_dir: Path) -> rundir.Run | None:
    """The rendered run, or None when its directory or manifest is gone."""
    return rundir.open_run(run_dir) if (run_dir / rundir.MANIFEST).exists() else None


def _state(run: rundir.Run | None) -> tuple[str, dict | None]:
    """The run's state, and for a failed one the step, its cause and its log."""
    if run is None:
        return "missing", None
    state = rundir.state(run)
    failed = rundir.failed_steps(run, rundir.step_records(run))
    if state != "failed" or not failed:
        return state, None
    step, record = next(iter(failed.items()))
    return state, {"step": step, "cause": record.get("cause") or "no error line in the log", "log": record.get("log")}


def _answers(run_dir: Path, dataset: str) -> list[tuple[str, str]]:
    """(predicted, label) per row of a predict set, in row order."""
    path = run_dir / rundir.predict_dir(dataset) / rundir.PREDICTIONS
    if not path.exists():
        return []
    try:
        return [(row.predict, row.label) for row in score.read_predictions(path, skip_bad=True).rows]
    except TlfError:   # an empty or unreadable file: the run shows no answers, the report goes on
        return []


def _record(root: Path, entry: RunEntry, sets: list[str], reference: str | None, vary_base: str | None) -> RunRecord:
    run_dir = root / entry.name
    train_dir = run_dir / rundir.TRAIN_DIR
    results = _read_object(train_dir / rundir.TRAIN_RESULTS)
    scores = _read_object(run_dir / rundir.SCORES).get("sets")
    scores = {k: v for k, v in scores.items() if isinstance(v, dict)} if isinstance(scores, dict) else {}
    adapter = train_dir / rundir.ADAPTER_WEIGHTS
    weights = adapter if adapter.exists() else train_dir / "model.safetensors"
    log = _trainer_log(train_dir)
    segments = training_segments(log)
    losses = loss_curve(segments)
    runtime, rate = runtime_figures(segments, results)
    # LLaMA-Factory logs memory only with RECORD_VRAM=1 (tlf's steps set it).
    peak = [e["vram_allocated"] for e in log if _number(e.get("vram_allocated")) and e["vram_allocated"] > 0]
    state, failure = _state(_open(run_dir))
    row = {
        "trainable_params": _trainable_from_logs(run_dir)
        or (safetensors_parameters(adapter) if adapter.exists() else None),
        "adapter_mb": round(weights.stat().st_size / 2**20, 3) if weights.exists() else None,
        "train_runtime_s": runtime,
        "samples_per_s": rate,
        "peak_mem_gb": max(peak) if peak else None,
        "final_loss": losses[-1][2]
        if losses
        else (results.get("train_loss") if _number(results.get("train_loss")) else None),
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
    return RunRecord(name=entry.name, label=entry.label, state=state, point=entry.point or entry.varied,
                     baseline=entry.baseline, reference=reference, vary_base=vary_base, row=row,
                     losses=losses, failure=failure,
                     answers={d: _answers(run_dir, d) for d in sets}, by_category=by_category, segments=len(segments),
                     selection=selection, seed=entry.seed, config=entry.config)


def _reference(entry: RunEntry, names: list[str], baselines: dict) -> str | None:
    """A vary point's base; else the upstream baseline of the same replica (seed), never for a
    baseline itself."""
    if entry.reference in names:
        return entry.reference
    if entry.baseline:
        return None
    return baselines.get(entry.seed)


def read(root: Path) -> Study:
    """Every run of the experiment at ``root`` as its records and files say (no test yet: verdicts.judge)."""
    experiment = rundir.Experiment(root).read()
    sets, runs = experiment.predict_sets, experiment.runs
    names = [r.name for r in runs]
    baselines = {}                     # seed (None without replicas) -> the baseline run of that replica
    for run in runs:
        if run.baseline:
            baselines.setdefault(run.seed, run.name)
    records = [_record(root, entry, sets, _reference(entry, names, baselines),
                       entry.reference if entry.reference in names else None) for entry in runs]
    axes = [a for a in experiment.axes or _axes_from_varied(runs) if a.get("arguments")]
    opened = [run for run in (_open(root / entry.name) for entry in runs) if run is not None]
    questions = {d: _questions(opened, d, _instruction(opened)) for d in sets}
    ceiling = _ceiling(opened, sets)
    notes = _notes(records, questions, _instruction(opened)) + _ceiling_notes(ceiling)
    return Study(experiment, axes, records, questions, notes, {d: c["acc"] for d, c in ceiling.items()})


def _axes_from_varied(runs: list[RunEntry]) -> list[dict]:
    """An experiment rendered before axes were recorded: one grid axis per varied argument."""
    return [{"kind": "grid", "arguments": [key]} for key in sorted({k for r in runs for k in r.varied})]


def _questions(runs: list[rundir.Run], dataset: str, wrapper: str | None = None) -> list[dict]:
    """The predict set's rows as the runs saw them: question (the instruction wrapper taken off),
    the whole prompt, label, category (from the split)."""
    for run in runs:
        entry = _read_object(run.path / rundir.DATASETS_FILE).get(dataset)
        if not run.manifest.dataset_dir or not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            continue
        records = rundir.read_json(run.dataset_dir / entry["file_name"])
        if not isinstance(records, list):
            continue
        categories = _categories(run.split_manifest, dataset)
        prompts = [str(r.get("instruction", "")) + ("\n" + str(r["input"]) if r.get("input") else "")
                   if isinstance(r, dict) else None for r in records]
        return [{"question": _unwrapped(prompt, wrapper), "prompt": prompt, "label": str(r.get("output", "")),
                 "category": categories[i] if i < len(categories) else ""}
                for i, (r, prompt) in enumerate(zip(records, prompts)) if prompt is not None]
    return []


def _unwrapped(prompt: str, wrapper: str | None) -> str:
    """The question inside the data's instruction wrapper (``回答...,{question},应该怎么做？``), else the prompt."""
    if not wrapper or "{question}" not in wrapper:
        return prompt
    before, after = wrapper.split("{question}", 1)
    if prompt.startswith(before) and prompt.endswith(after) and len(prompt) >= len(before) + len(after):
        return prompt[len(before):len(prompt) - len(after)]
    return prompt


def _split_manifests(runs: list[rundir.Run]):
    """Each run's split manifest (the data's record of its subsets), as far as it is readable."""
    for run in runs:
        yield _read_object(run.split_manifest) if run.split_manifest else {}


def _ceiling(runs: list[rundir.Run], sets: list[str]) -> dict:
    """Best possible exact match per predict set, where the split manifest records one (synthetic data)."""
    for split in _split_manifests(runs):
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


def _instruction(runs: list[rundir.Run]) -> str | None:
    """The data's instruction wrapper (``...{question}...``): rundir's lookup, run by run."""
    return next((w for w in (run.instruction_wrapper for run in runs) if w), None)


def _categories(split_manifest: Path | None, dataset: str) -> list[str]:
    if split_manifest is None:
        return []
    try:
        return score.categories_for(split_manifest, dataset)
    except TlfError:
        return []


def _notes(records: list[RunRecord], questions: dict, instruction: str | None) -> list[str]:
    """What a reader should know before believing the numbers."""
    notes = []
    for record in records:
        constant = {d: a[0][0].strip() for d, a in record.answers.items()
                    if len(a) > 1 and len({predicted.strip() for predicted, _ in a}) == 1}
        for text in dict.fromkeys(constant.values()):
            sets = [d for d, t in constant.items() if t == text]
            what = (
                "an empty answer"
                if not text
                else f"the instruction's own text, {_clip(text, 50)!r}"
                if _is_instruction(text, instruction, questions.get(sets[0]))
                else f"the same text, {_clip(text, 50)!r}"
            )
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
    from ..data import normalise_question

    folded = normalise_question(text)
    if not folded:
        return False
    wrapper = normalise_question(instruction.replace("{question}", "")) if instruction else None
    return folded == wrapper or any(folded in normalise_question(row.get("prompt", row["question"]))
                                    for row in (rows or [])[:20])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


