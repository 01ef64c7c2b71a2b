"""Replicas (``seeds:`` in a spec): the runs of one configuration over seeds, summarised as
mean ± sd (min-max) per metric and predict set, each configuration compared with its reference
configuration on every replica (``compare.compare_pooled``: per question, the share of replicas
right; the questions as paired units), and the spread plotted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import compare, score
from .study import RunRecord, Study, metric_column

SUMMARY_METRICS = ("acc", "rouge-1")


@dataclass
class Configuration:
    name: str
    label: str | None
    runs: list[RunRecord]                # its replicas, in seed order as rendered
    reference: str | None                # the configuration it is compared with
    comparisons: dict                    # set -> compare_pooled result, p Holm-adjusted over the sweep

    @property
    def title(self) -> str:
        return f"{self.name} ({self.label})" if self.label else self.name

    def values(self, metric: str, dataset: str) -> list[float]:
        column = metric_column(metric, dataset)
        return [r.row[column] for r in self.runs if isinstance(r.row.get(column), (int, float))]


def configurations(study: Study) -> list[Configuration]:
    """The configurations of a replicated study (empty when no run is a replica)."""
    if not any(r.config for r in study.records):
        return []
    groups: dict[str, list[RunRecord]] = {}
    for record in study.records:
        groups.setdefault(record.config or record.name, []).append(record)
    config_of = {r.name: (r.config or r.name) for r in study.records}
    found = []
    for name, runs in groups.items():
        references = {config_of.get(r.reference) for r in runs if r.reference}
        found.append(Configuration(name, runs[0].label, runs, next(iter(references), None), {}))
    return found


def attach(study: Study, configs: list[Configuration], similarity: score.Similarity) -> None:
    by_name = {c.name: c for c in configs}
    for dataset in study.sets:
        pairs = [(c, by_name[c.reference]) for c in configs if c.reference in by_name]
        pairs = [(c, ref) for c, ref in pairs if _answered(c, dataset) and _answered(ref, dataset)
                 and len({len(r.answers[dataset]) for r in c.runs + ref.runs}) == 1]
        results = [compare.compare_pooled(_outcomes(c, dataset, similarity), _outcomes(ref, dataset, similarity))
                   for c, ref in pairs]
        for (config, _ref), result, p_holm in zip(pairs, results, compare.holm([r["p_value"] for r in results])):
            config.comparisons[dataset] = {**result, "p_holm": p_holm, "family": len(results)}


def mean_records(configs: list[Configuration]) -> list[RunRecord]:
    """One record per configuration whose numbers are its replicas' means: what the sweep-axis
    plots draw (one point per configuration, not one per seed on top of each other)."""
    import dataclasses

    config_of = {r.name: c.name for c in configs for r in c.runs}
    means = []
    for config in configs:
        first = config.runs[0]
        row = {}
        for key in first.row:
            values = [r.row.get(key) for r in config.runs]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            row[key] = float(np.mean(numbers)) if numbers else None
        means.append(dataclasses.replace(first, name=config.name, row=row, reference=config.reference,
                                         vary_base=config_of.get(first.vary_base, first.vary_base)))
    return means


def _answered(config: Configuration, dataset: str) -> bool:
    return bool(config.runs) and all(len(r.answers.get(dataset, [])) >= 2 for r in config.runs)


def _outcomes(config: Configuration, dataset: str, similarity: score.Similarity) -> list[compare.Outcomes]:
    return [compare.Outcomes.of_answers(r.answers[dataset], similarity) for r in config.runs]


def _spread(values: list[float]) -> tuple[str, str]:
    if not values:
        return "–", "–"
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}", f"{min(values):.1f}–{max(values):.1f}"


def table(study: Study, configs: list[Configuration]) -> pd.DataFrame:
    """One row per configuration: replicas, mean ± sd and min–max per metric and set, and against
    its reference configuration the difference in exact match with its interval and p."""
    rows = []
    for config in configs:
        row = {"configuration": config.name, "what": config.label or "", "replicas": len(config.runs),
               "seeds": " ".join(str(r.seed) for r in config.runs if r.seed is not None)}
        for dataset in study.sets:
            for metric in SUMMARY_METRICS:
                mean_sd, span = _spread(config.values(metric, dataset))
                row[f"{metric} % mean ± sd [{dataset}]"] = mean_sd
                row[f"{metric} % min–max [{dataset}]"] = span
            tested = config.comparisons.get(dataset)
            row[f"Δacc pp [{dataset}]"] = tested["diff"] if tested else None
            row[f"95% CI of Δacc [{dataset}]"] = (f"[{tested['diff_ci'][0]:+.1f}, {tested['diff_ci'][1]:+.1f}]"
                                                   if tested else None)
            row[f"p of Δacc [{dataset}]"] = round(tested["p_holm"], 4) if tested else None
        row["compared with"] = config.reference or ""
        rows.append(row)
    return pd.DataFrame(rows)


def note(configs: list[Configuration]) -> list[str]:
    if not configs:
        return []
    counts = sorted({len(c.runs) for c in configs})
    return [f"Replicas: each configuration ran {'/'.join(map(str, counts))} times (seeds:); the table 'by "
            "configuration' shows mean ± sd (sample sd) and min–max over them. A configuration is compared with "
            "its reference on every replica: per question the share of replicas that answered it exactly, the "
            "questions as paired units (paired permutation test, bootstrap 95 % interval; Holm over the sweep). "
            "Questions are what a test set samples; with 2-3 seeds a test on replica means has 1-2 degrees of "
            "freedom, and counting every (seed, question) as independent would overstate the evidence."]


def plot(study: Study, configs: list[Configuration]) -> bytes | None:
    """Exact match per configuration: each replica a dot, the mean a bar, per predict set."""
    from .plots import _png, _pyplot

    if not configs:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(configs) * len(study.sets)), 4.5))
    width = 0.8 / max(len(study.sets), 1)
    top = 5.0
    markers = ["o", "s", "^", "D"]
    for index, dataset in enumerate(study.sets):
        color = f"C{index}"
        for x, config in enumerate(configs):
            values = config.values("acc", dataset)
            if not values:
                continue
            position = x - 0.4 + width * (index + 0.5)
            axis.bar(position, float(np.mean(values)), width=width * 0.9, color=color, alpha=0.35,
                     label=dataset if x == 0 else None)
            axis.plot([position] * len(values), values, linestyle="none", marker=markers[index % 4], color=color)
            top = max(top, *values)
    axis.set_xticks(range(len(configs)), [c.title for c in configs], rotation=15, fontsize=8)
    axis.set_ylim(0, top * 1.12)
    axis.set_ylabel("acc (%)")
    axis.set_title("Exact match per configuration: each seed a point, the mean a bar", fontsize=10)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.grid(alpha=0.3, axis="y")
    return _png(figure)


def best_note(study: Study, configs: list[Configuration], similarity: score.Similarity) -> list[str]:
    """The best configuration by exact match on the test set over all its replicas, if it is
    distinguishable from every other (pooled per question, Holm), else those that tie with it."""
    dataset = study.test_set
    if dataset is None:
        return []
    usable = [c for c in configs if _answered(c, dataset)]
    if len({len(r.answers[dataset]) for c in usable for r in c.runs}) != 1 or len(usable) < 2:
        return []
    shares = {c.name: compare.pooled(_outcomes(c, dataset, similarity)) for c in usable}
    titles = {c.name: f"{c.title} ×{len(c.runs)}" for c in usable}
    acc = {name: float(v.mean()) for name, v in shares.items()}
    best, others, adjusted, ties = compare.best_and_ties(
        acc, lambda top, other: compare.permutation_p(shares[top], shares[other]))
    how = ("paired permutation over questions of the share of replicas right"
           + (f", Holm-adjusted over {len(others)} comparisons" if len(others) > 1 else ""))
    if not ties:
        runner = max(others, key=lambda name: acc[name])
        return [f"Best configuration on {dataset} by exact match over its replicas: {titles[best]} at "
                f"{acc[best]:.1f} % (mean), distinguishable from every other (runner-up {titles[runner]} at "
                f"{acc[runner]:.1f} %, p = {adjusted[others.index(runner)]:.3g}; {how})."]
    listing = ", ".join(f"{titles[n]} ({acc[n]:.1f} %)" for n in [best, *sorted(ties, key=lambda n: -acc[n])])
    return [f"No best configuration on {dataset} by exact match: {listing} tie within noise over their replicas "
            f"({how}, p >= 5 % against the top one)."]
