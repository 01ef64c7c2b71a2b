"""Class-balanced, nested subsets: planned (pure), rendered to bytes, written all or none."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import rundir
from ..errors import TlfError
from ..fsutil import sha256_bytes, sha256_file, write_all
from .common import BLOG_INSTRUCTION, DATA_INFO, MANIFEST, check_name, refuse_inputs
from .read import (
    dump_alpaca,
    import_rows,
    load_imported,
    normalise_question,
    read_raw,
    write_synthetic,
)
from .register import _info_lock, merged_info, split_entries


@dataclass(frozen=True)
class SubsetRequest:
    name: str
    size: int | None     # None: every row left in the pool (e.g. train_all)
    role: str            # "train", "test" or "dev"
    optional: bool = False   # too few rows left: skipped with a warning instead of refused


@dataclass
class SplitPlan:
    mode: str
    seed: int
    subsets: dict[str, list[int]] = field(default_factory=dict)   # name -> sorted row indices
    roles: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    excluded: int = 0    # strict hold-out: rows kept out of every train subset


def largest_remainder(total: int, counts: dict[str, int], caps: dict[str, int]) -> dict[str, int]:
    """Per-class quotas summing to ``total``, proportional to ``counts``, each at most its cap.

    Floors first, then one extra row to the classes with the largest fractional part (ties
    by class name, so the result is deterministic). Each quota is within one row of the
    exact proportion.
    """
    grand = sum(counts.values())
    exact = {c: total * n / grand for c, n in counts.items()}
    quotas = {c: math.floor(v) for c, v in exact.items()}
    for c, q in quotas.items():
        if q > caps.get(c, 0):
            raise TlfError(f"class {c!r} is too small for the requested split: needs {q} rows, "
                           f"{caps.get(c, 0)} left")
    order = sorted(exact, key=lambda c: (-(exact[c] - quotas[c]), c))
    missing = total - sum(quotas.values())
    for c in order:
        if missing == 0:
            break
        if quotas[c] < caps.get(c, 0) and exact[c] > quotas[c]:
            quotas[c] += 1
            missing -= 1
    if missing:
        raise TlfError(f"cannot take {total} rows in the data's proportions: the classes are too small")
    return quotas


DEV_SIZE = 200   # rows of the dev set checkpoint selection scores on (select: in a spec)


def default_requests(
    test_size: int = 100,
    train_sizes: tuple[int, ...] = (100, 400),
    prefix: str = "telecom",
    mode: str = "holdout",
    dev_size: int | None = None,
) -> list[SubsetRequest]:
    """The blog's subsets and a dev set (``dev_size`` 0: none; None: DEV_SIZE rows where the data
    has them left, else none, with a warning); ``holdout`` adds ``<prefix>_train_all``."""
    requests = [SubsetRequest(f"{prefix}_test_{test_size}", test_size, "test")]
    requests += [SubsetRequest(f"{prefix}_train_{n}", n, "train") for n in sorted(set(train_sizes))]
    if dev_size != 0:
        size = DEV_SIZE if dev_size is None else dev_size
        requests.append(SubsetRequest(f"{prefix}_dev_{size}", size, "dev", optional=dev_size is None))
    if mode == "holdout":
        requests.append(SubsetRequest(f"{prefix}_train_all", None, "train"))
    return requests


def plan_splits(categories: list[str], requests: list[SubsetRequest], seed: int = 42,
                mode: str = "holdout", questions: list[str] | None = None) -> SplitPlan:
    """Which rows go to which subset. Pure: same inputs, same plan.

    ``holdout``: test subsets are cut first from the whole data; train subsets are nested
    (each smaller one inside the next) and drawn from the rows no test subset took.
    ``blog``: as ``holdout``, plus ``<prefix>_train_<N>`` = every row, as the blog trained
    on the whole file: its test rows are inside that training set.
    ``questions`` (strict hold-out): rows whose normalised question equals a test row's are
    kept out of the train subsets too, so no test question is seen in another spelling.
    A dev set (role ``dev``) is cut after the fixed-size train subsets, from rows none of them
    holds, so they are the same with or without it; ``<prefix>_train_all`` leaves its rows out
    (and, strict, their near-duplicates). In blog mode ``<prefix>_train_<N>`` holds it too.
    """
    if mode not in ("holdout", "blog"):
        raise TlfError(f"unknown split mode {mode!r}; expected 'holdout' or 'blog'")
    for request in requests:
        check_name(request.name)
        if request.size is not None and request.size < 1:
            raise TlfError(f"subset {request.name}: size must be at least 1, got {request.size}")
    plan = SplitPlan(mode=mode, seed=seed)
    counts = Counter(categories)
    rng = random.Random(seed)
    # One shuffled order per class: test rows come from its front, nested train rows after.
    order = {c: [i for i, k in enumerate(categories) if k == c] for c in sorted(counts)}
    for c in order:
        rng.shuffle(order[c])
    taken = _cut_tests(plan, [r for r in requests if r.role == "test"], counts, order)
    pool = {c: order[c][taken[c]:] for c in order}
    if questions is not None:
        pool = _strict_holdout(plan, pool, questions)
    trains = [r for r in requests if r.role == "train"]
    largest = _cut_trains(plan, [r for r in trains if r.size is not None], counts, pool)
    pool = _cut_dev(plan, [r for r in requests if r.role == "dev"], counts, pool, largest, questions)
    _cut_trains(plan, [r for r in trains if r.size is None], counts, pool, largest)
    if mode == "blog":
        everything = f"{_prefix(requests)}_train_{len(categories)}"
        plan.subsets[everything], plan.roles[everything] = list(range(len(categories))), "train"
        plan.warnings.append(
            f"blog mode: {everything} holds every row, so the rows of "
            f"{', '.join(n for n, r in plan.roles.items() if r in ('test', 'dev'))} are inside its "
            "training set; scores on them measure recall of seen rows, not generalisation")
    return plan


def _cut_tests(plan: SplitPlan, tests: list[SubsetRequest], counts: Counter, order: dict) -> dict[str, int]:
    """Test subsets from the front of each class's order; returns the rows taken per class."""
    taken = {c: 0 for c in order}
    for request in tests:
        caps = {c: len(order[c]) - taken[c] for c in order}
        size = request.size if request.size is not None else sum(caps.values())
        if size > sum(caps.values()):
            raise TlfError(f"subset {request.name}: asks for {size} rows, only {sum(caps.values())} left")
        quotas = largest_remainder(size, counts, caps)
        chosen = [i for c in order for i in order[c][taken[c]:taken[c] + quotas[c]]]
        for c in order:
            taken[c] += quotas[c]
        plan.subsets[request.name], plan.roles[request.name] = sorted(chosen), "test"
    return taken


def _strict_holdout(plan: SplitPlan, pool: dict, questions: list[str]) -> dict:
    """Keep rows whose normalised question is a test question out of the train pool."""
    held_out = {normalise_question(questions[i]) for name, role in plan.roles.items() if role == "test"
                for i in plan.subsets[name]}
    before = sum(len(rows) for rows in pool.values())
    pool = {c: [i for i in rows if normalise_question(questions[i]) not in held_out] for c, rows in pool.items()}
    plan.excluded = before - sum(len(rows) for rows in pool.values())
    return pool


def _cut_trains(plan: SplitPlan, trains: list[SubsetRequest], counts: Counter, pool: dict,
                previous: dict[str, int] | None = None) -> dict[str, int] | None:
    """Nested train subsets, smallest first, each inside the next (and inside ``previous``'s
    quotas), in the data's proportions; returns the largest one's quotas per class."""
    caps = {c: len(rows) for c, rows in pool.items()}
    for request in sorted(trains, key=lambda r: math.inf if r.size is None else r.size):
        available = sum(caps.values())
        size = available if request.size is None else request.size
        if size > available:
            raise TlfError(f"subset {request.name}: asks for {size} rows, only {available} left "
                           f"after the test subsets")
        quotas = caps if request.size is None else largest_remainder(size, counts, caps)
        if previous and any(quotas[c] < previous[c] for c in quotas):
            raise TlfError(f"subset {request.name}: cannot contain the smaller train subset in "
                           "the data's proportions; choose sizes further apart")
        plan.subsets[request.name] = sorted(i for c in pool for i in pool[c][:quotas[c]])
        plan.roles[request.name] = "train"
        previous = quotas
    return previous


def _cut_dev(plan: SplitPlan, devs: list[SubsetRequest], counts: Counter, pool: dict,
             after: dict[str, int] | None, questions: list[str] | None) -> dict:
    """The dev set, class-balanced, from the pool rows after the largest fixed-size train subset
    (strict: none whose normalised question a train subset holds); returns the pool without it
    (strict: without its near-duplicates either)."""
    for request in devs:
        candidates = {c: rows[(after or {}).get(c, 0):] for c, rows in pool.items()}
        if questions is not None:
            seen = {normalise_question(questions[i]) for n, r in plan.roles.items() if r == "train"
                    for i in plan.subsets[n]}
            candidates = {c: [i for i in rows if normalise_question(questions[i]) not in seen]
                          for c, rows in candidates.items()}
        caps = {c: len(rows) for c, rows in candidates.items()}
        if request.size > sum(caps.values()) and request.optional:
            plan.warnings.append(f"no dev set: {request.name} needs {request.size} rows and only {sum(caps.values())} "
                                 "are left after the test and train subsets (pass --dev-size N to cut a smaller one)")
            continue
        if request.size > sum(caps.values()):
            raise TlfError(f"subset {request.name}: asks for {request.size} rows, only {sum(caps.values())} left "
                           "after the test and train subsets; pass a smaller --dev-size, or --dev-size 0")
        quotas = largest_remainder(request.size, counts, caps)
        chosen = {i for c, rows in candidates.items() for i in rows[:quotas[c]]}
        plan.subsets[request.name], plan.roles[request.name] = sorted(chosen), "dev"
        drop = set(chosen)
        if questions is not None:
            held = {normalise_question(questions[i]) for i in chosen}
            near = {i for rows in pool.values() for i in rows if normalise_question(questions[i]) in held} - drop
            plan.excluded += len(near)
            drop |= near
        pool = {c: [i for i in rows if i not in drop] for c, rows in pool.items()}
    return pool


def _prefix(requests: list[SubsetRequest]) -> str:
    return requests[0].name.split("_", 1)[0] if requests else "telecom"


def render_splits(records: list[dict], categories: list[str], plan: SplitPlan, meta: dict,
                  source_file: Path) -> tuple[dict[str, bytes], dict]:
    """File name -> bytes for every subset, and the manifest describing them."""
    files: dict[str, bytes] = {}
    splits: dict[str, dict] = {}
    for name, indices in plan.subsets.items():
        blob = dump_alpaca([records[i] for i in indices])
        files[f"{name}.json"] = blob
        cats = [categories[i] for i in indices]
        splits[name] = {
            "file": f"{name}.json",
            "sha256": sha256_bytes(blob),
            "role": plan.roles[name],
            "rows": len(indices),
            "class_counts": dict(sorted(Counter(cats).items())),
            "categories": cats,
            "source_rows": indices,
        }
    manifest = {
        "tool": "tlf",
        "mode": plan.mode,
        "seed": plan.seed,
        "source": str(Path(source_file).resolve()),
        "source_sha256": sha256_file(Path(source_file)),
        "raw_source": meta.get("source"),
        "raw_source_sha256": meta.get("source_sha256"),
        "instruction": meta.get("instruction"),
        "class_counts": dict(sorted(Counter(categories).items())),
        "warnings": plan.warnings,
        "excluded_near_duplicates_of_test": plan.excluded,
        "splits": splits,
    }
    return files, manifest


def write_splits(out_dir: Path, files: dict[str, bytes], manifest: dict, force: bool = False,
                 register_into: Path | None = None, inputs: tuple[Path, ...] = ()) -> None:
    """The subsets, the manifest and the dataset_info.json entries, all or none: every check is
    made before anything is written, and a fault while writing (a full disk) leaves no part."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TlfError(f"--out {out_dir}: is a file; expected a directory for the subsets")
    targets: dict[Path, bytes] = {out_dir / name: blob for name, blob in files.items()}
    info = register_into or out_dir / DATA_INFO
    refuse_inputs([*targets, out_dir / MANIFEST, info], inputs)
    stale = _earlier_subsets(out_dir, manifest["splits"], force)
    for path, blob in targets.items():
        if path.exists() and not force and path.read_bytes() != blob:
            raise TlfError(f"{path} exists with different content; pass --force to overwrite")
    targets[out_dir / MANIFEST] = (json.dumps(manifest, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    entries = split_entries(manifest["splits"], out_dir, info)
    dropped = split_entries(stale, out_dir, info)
    merged_info(info, entries, force, dropped)          # a refusal here writes nothing
    with _info_lock(info):
        merged = merged_info(info, entries, force, dropped)
        write_all({**targets, **({info: merged} if merged is not None else {})}, follow_links=[info])
        for split in stale.values():               # the earlier split's own files, now replaced
            (out_dir / split["file"]).unlink(missing_ok=True)


def _earlier_subsets(out_dir: Path, splits: dict, force: bool) -> dict:
    """The subsets an earlier split into ``out_dir`` made that this one does not (other sizes):
    left behind they would stay registered in dataset_info.json, orphans a spec could still
    name. Replacing them needs ``force``."""
    earlier = rundir.read_json(out_dir / MANIFEST)
    old = earlier.get("splits") if isinstance(earlier, dict) and earlier.get("tool") == "tlf" else None
    if not isinstance(old, dict):
        return {}
    stale = {name: split for name, split in old.items() if name not in splits and isinstance(split, dict)
             and isinstance(split.get("file"), str) and "/" not in split["file"] and split["file"] == f"{name}.json"}
    if stale and not force:
        raise TlfError(f"{out_dir}: holds an earlier split whose subsets {', '.join(sorted(stale))} this split does "
                       "not make; pass --force to replace that split (their files and dataset_info.json entries "
                       "are removed), or split into another directory")
    return stale





def prepare_synthetic(root: Path, n_rows: int = 5000, seed: int = 0, mode: str = "holdout",
                      split_seed: int = 42) -> Path:
    """synth -> import -> split in ``root``, as the commands do; returns the dataset_dir.

    The demo, the tests and the benchmarks all start from this."""
    raw = root / "raw.csv"
    write_synthetic(raw, n_rows=n_rows, seed=seed, force=True)
    imported = import_rows(read_raw(raw), raw, root / "data", "telecom_all", force=True)
    records, categories, meta = load_imported(imported.data_file)
    plan = plan_splits(categories, default_requests(mode=mode), seed=split_seed, mode=mode)
    files, manifest = render_splits(records, categories, plan, meta, imported.data_file)
    manifest["ceiling"] = synthetic_ceiling(files)
    write_splits(root / "data", files, manifest, force=True)
    return root / "data"


CEILING_WHY = ("the share of rows whose answer follows from the question alone (its product and intent, read "
               "with the catalogue): no model can score more exact matches")


def synthetic_ceiling(files: dict[str, bytes]) -> dict:
    """Per synthetic subset: the best exact match a model can reach (``synth.derivable``)."""
    from .. import synth

    before, after = BLOG_INSTRUCTION.split("{question}")
    ceiling = {}
    for name, blob in files.items():
        rows = json.loads(blob)
        questions = [r["instruction"].removeprefix(before).removesuffix(after) for r in rows]
        reachable = sum(synth.derivable(q, r["output"]) for q, r in zip(questions, rows))
        ceiling[name.removesuffix(".json")] = {"acc": round(100 * reachable / max(len(rows), 1), 2), "why": CEILING_WHY}
    return ceiling
