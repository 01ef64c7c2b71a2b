"""Two prediction sets on the same questions: is the difference distinguishable from noise?

Per metric, on the questions both sets answered (matched by prompt, else by row):

- ``acc`` and ``long_recall`` (exact match, per question right or wrong): the exact McNemar test,
  a two-sided binomial test on the discordant pairs (``scipy.stats.binomtest``), and a paired
  bootstrap 95 % interval of the difference in percentage points (``scipy.stats.bootstrap``,
  percentile, seeded).
- ``rouge-1`` (a score per question): the same bootstrap interval, and a paired permutation test
  of the mean difference (``scipy.stats.permutation_test``, each question's two scores swapped
  or not; seeded).

A difference is *distinguishable* when its p-value is below ``alpha`` (5 %); where several
comparisons are made at once, ``holm`` adjusts their p-values first (scipy has no Holm step-down,
so it is written here: sort, scale the k-th smallest by (m - k + 1), keep the running maximum).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TlfError
from .score import LONG_THRESHOLD, Row, Similarity

ALPHA = 0.05
RESAMPLES = 2000
SEED = 0
PAIRED_METRICS = ("acc", "long_recall", "rouge-1")
BINARY = ("acc", "long_recall")


@dataclass(frozen=True)
class Outcomes:
    """Per question: right (exact match, stripped), a long answer, its ROUGE-1."""
    exact: np.ndarray
    long: np.ndarray
    rouge1: np.ndarray

    @classmethod
    def of(cls, rows: list[Row], similarity: Similarity | None = None,
           long_threshold: int = LONG_THRESHOLD) -> Outcomes:
        similarity = similarity or Similarity()
        return cls(exact=np.array([r.predict.strip() == r.label.strip() for r in rows], dtype=bool),
                   long=np.array([len(r.label.strip()) > long_threshold for r in rows], dtype=bool),
                   rouge1=np.array([similarity.pair(r.predict, r.label)[0] for r in rows], dtype=float))

    @classmethod
    def of_answers(cls, answers: list[tuple[str, str]], similarity: Similarity | None = None) -> Outcomes:
        """From (predicted, label) per question, in row order (what the report holds per run)."""
        return cls.of([Row(i + 1, predicted, label) for i, (predicted, label) in enumerate(answers)], similarity)

    def values(self, metric: str) -> np.ndarray:
        """The per-question values a metric is the mean of (x100: percent), on its own questions."""
        if metric == "acc":
            return self.exact * 100.0
        if metric == "long_recall":
            return self.exact[self.long] * 100.0
        return self.rouge1


def pair_rows(a: list[Row], b: list[Row], a_name: str = "A", b_name: str = "B") -> tuple[list[Row], list[Row]]:
    """The rows of A and B in matching order: by prompt where both files carry prompts (the k-th
    occurrence of a prompt with its k-th occurrence), else by position. Different question sets
    are refused, naming rows."""
    if len(a) < 2 or len(b) < 2:
        raise TlfError(f"a paired comparison needs at least 2 questions in each file; {a_name} has {len(a)}, "
                       f"{b_name} has {len(b)}")
    if all(r.prompt is not None for r in a + b):
        return _by_prompt(a, b, a_name, b_name)
    if len(a) != len(b):
        raise TlfError(f"{a_name} has {len(a)} rows and {b_name} {len(b)}, and without prompts (0.6 files) rows are "
                       "matched by position: predict the same set with both")
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x.label.strip() != y.label.strip()]
    if differ:
        raise TlfError(f"{a_name} line {a[differ[0]].line} and {b_name} line {b[differ[0]].line} have different "
                       f"labels ({len(differ)} row(s) differ): not the same questions in the same order")
    return a, b


def _by_prompt(a: list[Row], b: list[Row], a_name: str, b_name: str) -> tuple[list[Row], list[Row]]:
    def keyed(rows: list[Row]) -> dict[tuple[str, int], Row]:
        seen: dict[str, int] = {}
        out = {}
        for row in rows:
            seen[row.prompt] = seen.get(row.prompt, 0) + 1
            out[(row.prompt, seen[row.prompt])] = row
        return out

    ka, kb = keyed(a), keyed(b)
    only_a = [ka[k].line for k in ka if k not in kb]
    only_b = [kb[k].line for k in kb if k not in ka]
    if only_a or only_b:
        raise TlfError(f"the two files do not hold the same questions: {len(only_a)} of {a_name}'s prompts are not "
                       f"in {b_name} (lines {_lines(only_a)}), {len(only_b)} of {b_name}'s not in {a_name} (lines "
                       f"{_lines(only_b)}); compare predictions of the same set")
    return [ka[k] for k in ka], [kb[k] for k in ka]


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5]))
    return shown + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "") if numbers else "none"


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar: (two-sided p, questions only A got right, questions only B got right)."""
    from scipy.stats import binomtest

    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(b & ~a))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue), a_only, b_only


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, seed: int = SEED, resamples: int = RESAMPLES,
                 level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval of mean(a) - mean(b): questions resampled with replacement,
    both values of a question together."""
    from scipy.stats import bootstrap

    if np.all(a == a[0]) and np.all(b == b[0]):      # every resample the same: no spread to estimate
        value = float(a[0] - b[0])
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # a degenerate resample distribution warns, the interval stands
        result = bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=resamples,
                           confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def permutation_p(a: np.ndarray, b: np.ndarray, seed: int = SEED, resamples: int = RESAMPLES) -> float:
    """Paired permutation test of mean(a) - mean(b) = 0 (each question's pair swapped or not)."""
    from scipy.stats import permutation_test

    if np.array_equal(a, b):
        return 1.0
    result = permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                              n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(result.pvalue)


def p_value(metric: str, a: Outcomes, b: Outcomes, seed: int = SEED, resamples: int = RESAMPLES) -> float:
    """The test each metric is judged by: exact McNemar for right/wrong, paired permutation for a score."""
    if metric in BINARY:
        return mcnemar(a.values(metric) > 0, b.values(metric) > 0)[0]
    return permutation_p(a.values(metric), b.values(metric), seed, resamples)


def best_and_ties(values: dict[str, float], p_against_best) -> tuple[str, list[str], list[float], list[str]]:
    """The best of several (the first on a tie of values), the others, their Holm-adjusted p-values
    against the best (``p_against_best(best, other)``), and those not distinguishable from it."""
    names = list(values)
    best = max(names, key=lambda name: (values[name], -names.index(name)))
    others = [name for name in names if name != best]
    adjusted = holm([p_against_best(best, name) for name in others])
    ties = [name for name, p in zip(others, adjusted) if not distinguishable(p)]
    return best, others, adjusted, ties


def compare(a: Outcomes, b: Outcomes, seed: int = SEED, resamples: int = RESAMPLES) -> dict[str, dict]:
    """Per metric: A's and B's value, the difference A - B (percentage points), its 95 % interval,
    the p-value, the test, and for exact match the discordant questions."""
    results = {}
    for metric in PAIRED_METRICS:
        x, y = a.values(metric), b.values(metric)
        if len(x) == 0:
            results[metric] = {"questions": 0, "a": None, "b": None, "diff": None, "diff_ci": None, "p_value": None,
                               "test": "no such questions"}
            continue
        entry = {"questions": int(len(x)), "a": round(float(np.mean(x)), 2), "b": round(float(np.mean(y)), 2),
                 "diff": round(float(np.mean(x) - np.mean(y)), 2),
                 "diff_ci": [round(v, 2) for v in bootstrap_ci(x, y, seed, resamples)]}
        entry["p_value"] = p_value(metric, a, b, seed, resamples)
        if metric in BINARY:
            _p, a_only, b_only = mcnemar(x > 0, y > 0)
            entry.update(test="exact McNemar (binomial on discordant pairs)", only_a_right=a_only, only_b_right=b_only)
        else:
            entry["test"] = "paired permutation (mean difference)"
        results[metric] = entry
    return results


def pooled(replicas: list[Outcomes]) -> np.ndarray:
    """Per question, the share of a configuration's replicas (seeds) that answered it exactly, in %."""
    return np.mean([o.exact for o in replicas], axis=0) * 100.0


def compare_pooled(a: list[Outcomes], b: list[Outcomes], seed: int = SEED, resamples: int = RESAMPLES) -> dict:
    """Two configurations over their replicas, exact match: per question the share of replicas right
    (the seeds averaged within a question), then the questions as paired units: a paired permutation
    test and a paired bootstrap interval of the mean difference. The questions are the independent
    units a test set samples; with 2-3 seeds a test on the replica means would have 1-2 degrees of
    freedom, and pooling every (seed, question) as independent would overstate the evidence."""
    x, y = pooled(a), pooled(b)
    return {"questions": int(len(x)), "replicas": [len(a), len(b)], "a": round(float(x.mean()), 2),
            "b": round(float(y.mean()), 2), "diff": round(float(x.mean() - y.mean()), 2),
            "diff_ci": [round(v, 2) for v in bootstrap_ci(x, y, seed, resamples)],
            "p_value": permutation_p(x, y, seed, resamples),
            "test": "paired permutation over questions of the share of replicas right"}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values tested together (None stays None)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = list(p_values)
    running = 0.0
    m = len(known)
    for rank, (p, index) in enumerate(known):
        running = max(running, min(1.0, p * (m - rank)))
        adjusted[index] = running
    return adjusted


def distinguishable(p_value: float | None, alpha: float = ALPHA) -> bool:
    return p_value is not None and p_value < alpha


def verdict(entry: dict, alpha: float = ALPHA) -> str:
    """The words for one comparison: distinguishable from noise at 5 %, or not."""
    if entry.get("p_value") is None:
        return "no questions to compare"
    if distinguishable(entry["p_value"], alpha):
        return f"distinguishable from noise at {alpha:.0%}"
    return f"not distinguishable from noise at {alpha:.0%}"


def describe(results: dict[str, dict], a_name: str, b_name: str) -> str:
    """The terminal's account of a paired comparison."""
    lines = [f"A = {a_name}", f"B = {b_name}",
             f"{'metric':12s} {'A %':>7s} {'B %':>7s} {'A-B pp':>7s} {'95 % CI':>16s} {'p':>8s}  verdict"]
    for metric, entry in results.items():
        if entry["p_value"] is None:
            lines.append(f"{metric:12s} {'-':>7s} {'-':>7s} {'-':>7s} {'-':>16s} {'-':>8s}  {verdict(entry)}")
            continue
        low, high = entry["diff_ci"]
        lines.append(f"{metric:12s} {entry['a']:7.1f} {entry['b']:7.1f} {entry['diff']:+7.1f} "
                     f"{f'[{low:+.1f}, {high:+.1f}]':>16s} {entry['p_value']:8.3g}  {verdict(entry)}")
    acc = results["acc"]
    lines.append(f"exact match: {acc['questions']} questions; only A right on {acc['only_a_right']}, only B right on "
                 f"{acc['only_b_right']}; {acc['test']}; ROUGE-1: {results['rouge-1']['test']}; intervals: paired "
                 f"bootstrap, {RESAMPLES} resamples, seed {SEED}")
    return "\n".join(lines)


def compare_files(a_path: Path, b_path: Path, rows_a: list[Row], rows_b: list[Row]) -> dict:
    """The paired comparison of two predictions files, as ``tlf score A --against B`` reports it."""
    a, b = pair_rows(rows_a, rows_b, str(a_path), str(b_path))
    similarity = Similarity()
    return {"a": str(a_path), "b": str(b_path), "questions": len(a), "alpha": ALPHA, "resamples": RESAMPLES,
            "seed": SEED, "metrics": compare(Outcomes.of(a, similarity), Outcomes.of(b, similarity))}
