"""What the report says about differences, each with its test (``telecom_lf.compare``):

- every run against its reference (A/B base, upstream baseline), per predict set, for the Δ
  metrics: the difference, its paired bootstrap 95 % interval and its p-value; where a sweep
  makes several such comparisons, the p-values of each (set, metric) are Holm-adjusted together
  and the verdict words follow the adjusted ones;
- the best run, named only when it is distinguishable from every other run on the verdict set
  (the dev set when every run selected a checkpoint on one, else the test set), else the runs
  that tie with it within noise;
- runs whose training loss diverged, stalled, or ended far above the sweep's others.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .. import compare, rundir, score
from ..errors import TlfError
from . import replicas
from .study import DELTA_METRICS, RunRecord, Study

# Loss flags: the thresholds a note states with the numbers that tripped it.
FAR_ABOVE = 2.0          # final loss at least this many times the median final loss of the others
STALLED_SHARE = 0.9      # the last half ends at >= 90 % of the loss it started the run with ...
MIN_LOSS_POINTS = 6      # ... judged only on a run that logged at least this many losses


def _same_questions(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> bool:
    """Runs of one experiment predict the same rows in the same order; a run predicted with another
    row limit, or a torn file, cannot be paired."""
    return len(a) == len(b) >= 2 and all(x[1].strip() == y[1].strip() for x, y in zip(a, b))


def attach_comparisons(study: Study, similarity: score.Similarity | None = None) -> None:
    """record.comparisons[(set, metric)]: the paired comparison with its reference, p Holm-adjusted
    over the sweep's comparisons of that set and metric."""
    similarity = similarity or score.Similarity()
    by_name = {r.name: r for r in study.records}
    for dataset in study.sets:
        pairs = [(r, by_name.get(r.reference)) for r in study.records if r.reference in by_name]
        pairs = [(r, ref) for r, ref in pairs
                 if _same_questions(r.answers.get(dataset, []), ref.answers.get(dataset, []))]
        results = [compare.compare(compare.Outcomes.of_answers(r.answers[dataset], similarity),
                                   compare.Outcomes.of_answers(ref.answers[dataset], similarity)) for r, ref in pairs]
        for metric in DELTA_METRICS:
            adjusted = compare.holm([result[metric]["p_value"] for result in results])
            for (record, _ref), result, p_holm in zip(pairs, results, adjusted):
                record.comparisons[(dataset, metric)] = {**result[metric], "p_holm": p_holm, "family": len(results)}


def comparison_note(study: Study) -> list[str]:
    """How the Δ columns were tested, once, when any comparison was made."""
    families = {entry["family"] for r in study.records for entry in r.comparisons.values()}
    if not families:
        return []
    several = max(families) > 1
    return [f"Each Δ is tested against the run in 'compared with' on the same questions: exact McNemar for exact "
            f"match, a paired permutation test for ROUGE-1, with paired bootstrap 95 % intervals ({compare.RESAMPLES} "
            f"resamples, seed {compare.SEED}). "
            + (f"The sweep makes {max(families)} such comparisons per set and metric: the p columns are "
               "Holm-adjusted over them, and 'distinguishable' means an adjusted p below 5 %."
               if several else "'Distinguishable' means p below 5 %.")]


# ---------------------------------------------------------------- the best run, or a tie


def verdict_set(study: Study, root: Path) -> tuple[str, str, dict[str, list[tuple[str, str]]]] | None:
    """(where, metric, run -> answers) the best run is judged on: the dev set of select:, by its
    metric, when every trained run chose a checkpoint on it (the test sets never choose); else the
    test set by exact match."""
    trained = [r for r in study.records if r.state != "missing" and r.answers]
    selected = [r for r in trained if r.selection]
    if selected and len(selected) == len(trained):
        on = selected[0].selection.get("on")
        answers = {r.name: _dev_answers(root, r) for r in selected}
        return f"the dev set {on}", verdict_metric(study), {k: v for k, v in answers.items() if v}
    dataset = study.test_set
    if dataset is None:
        return None
    return dataset, "acc", {r.name: r.answers.get(dataset, []) for r in trained if r.answers.get(dataset)}


def _dev_answers(root: Path, record: RunRecord) -> list[tuple[str, str]]:
    step = (record.selection or {}).get("chosen", {}).get("step")
    if not isinstance(step, int):
        return []
    path = root / record.name / rundir.SELECT_DIR / rundir.checkpoint_name(step) / rundir.PREDICTIONS
    if not path.exists():
        return []
    try:
        return [(row.predict, row.label) for row in score.read_predictions(path, skip_bad=True).rows]
    except TlfError:         # an unreadable file: that run takes no part in the verdict
        return []


def verdict_metric(study: Study) -> str:
    """The metric the best run is judged by: select:'s metric when every run selected on it and
    it is one a per-question test exists for (acc, long_recall, rouge-1), else exact match."""
    metrics = {r.selection.get("metric") for r in study.records if r.selection}
    metric = metrics.pop() if len(metrics) == 1 else "acc"
    return metric if metric in compare.PAIRED_METRICS else "acc"


def best_run_note(study: Study, root: Path, similarity: score.Similarity | None = None) -> list[str]:
    """The best run on the verdict set by the verdict metric, if it is distinguishable from every
    other run (Holm over those comparisons); else the runs that tie with it within noise."""
    chosen = verdict_set(study, root)
    if chosen is None:
        return []
    where, metric, answers = chosen
    titles = {r.name: r.title for r in study.records}
    reference = next(iter(answers.values()), [])
    answers = {name: a for name, a in answers.items() if _same_questions(a, reference)}
    if len(answers) < 2:
        return []
    similarity = similarity or score.Similarity()
    outcomes = {name: compare.Outcomes.of_answers(a, similarity) for name, a in answers.items()}
    if metric == "long_recall" and not any(o.long.any() for o in outcomes.values()):
        metric = "acc"
    value = {name: float(o.values(metric).mean()) for name, o in outcomes.items()}
    best, others, adjusted, ties = compare.best_and_ties(
        value, lambda top, other: compare.p_value(metric, outcomes[top], outcomes[other]))
    test = "exact McNemar" if metric in compare.BINARY else "paired permutation"
    correction = f", Holm-adjusted over {len(others)} comparisons" if len(others) > 1 else ""
    what = "exact match" if metric == "acc" else metric
    if not ties:
        runner_up = max(others, key=lambda name: value[name])
        return [f"Best run on {where} by {what}: {titles[best]} at {value[best]:.1f} %, distinguishable from every "
                f"other run (runner-up {titles[runner_up]} at {value[runner_up]:.1f} %, {test} p = "
                f"{adjusted[others.index(runner_up)]:.3g}{correction})."]
    tied = [best, *sorted(ties, key=lambda name: -value[name])]
    listing = ", ".join(f"{titles[n]} ({value[n]:.1f} %)" for n in tied)
    return [f"No best run on {where} by {what}: runs {listing} tie within noise (each against the top run: "
            f"{test} p >= 5 %{correction}); more questions or seeds would be needed to tell them apart."]


# ---------------------------------------------------------------- loss flags


def loss_flags(records: list[RunRecord]) -> dict[str, list[str]]:
    """run -> what is wrong with its training loss, with the numbers that show it."""
    finals = {r.name: r.losses[-1][2] for r in records if r.losses and math.isfinite(r.losses[-1][2])}
    flags: dict[str, list[str]] = {}
    for record in records:
        found = _own_flags(record.losses)
        others = [v for name, v in finals.items() if name != record.name]
        mine = finals.get(record.name)
        if mine is not None and len(others) >= 2:
            median = statistics.median(others)
            if median > 0 and mine >= FAR_ABOVE * median:
                found.append(f"far above the others: final loss {mine:.3g}, {mine / median:.1f}x the median of the "
                             f"sweep's other runs ({median:.3g})")
        if found:
            flags[record.name] = found
    return flags


def _own_flags(losses: list[tuple[float, int, float]]) -> list[str]:
    values = [loss for _epoch, _step, loss in losses]
    bad = [step for _epoch, step, loss in losses if not math.isfinite(loss)]
    if bad:
        return [f"diverged: loss is NaN or infinite from step {bad[0]} ({len(bad)} logged step(s))"]
    if len(values) < MIN_LOSS_POINTS:
        return []
    first, final = values[0], values[-1]
    if final > 1.5 * first:
        return [f"diverged: loss rose from {first:.3g} to {final:.3g}"]
    half = values[len(values) // 2:]
    if final >= STALLED_SHARE * first and min(half) >= half[0] * 0.98:
        return [f"stalled: loss {first:.3g} at the start, {half[0]:.3g} halfway, {final:.3g} at the end: not "
                f"decreasing over the last half and still >= {STALLED_SHARE:.0%} of where it started"]
    return []


def flag_notes(study: Study, flags: dict[str, list[str]]) -> list[str]:
    titles = {r.name: r.title for r in study.records}
    return [f"{titles[name]}: {flag}." for name, found in flags.items() for flag in found]


def judge(study: Study, root: Path) -> Study:
    """The comparisons, the loss flags and their notes, added to a study read from disk."""
    similarity = score.Similarity()
    attach_comparisons(study, similarity)
    study.configs = replicas.configurations(study)
    replicas.attach(study, study.configs, similarity)
    flags = loss_flags(study.records)
    for record in study.records:
        record.flags = flags.get(record.name, [])
    best = (replicas.best_note(study, study.configs, similarity) if study.configs
            else best_run_note(study, root, similarity))
    study.notes = (best + comparison_note(study) + replicas.note(study.configs) + study.notes
                   + flag_notes(study, flags))
    return study
