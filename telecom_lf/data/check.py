"""``tlf data check``: leakage into the test and dev sets, duplicates, empty answers, class counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import guard
from ..errors import TlfError
from .common import MANIFEST, ROLES, check_name
from .read import normalise_question, read_json_file


@dataclass
class CheckReport:
    table: pd.DataFrame
    problems: list[str]


def read_manifest(manifest_path: Path) -> tuple[Path, dict]:
    """A split manifest (or the directory holding one): its path and its splits, checked."""
    manifest_path = Path(manifest_path)
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST
    if not manifest_path.exists():
        raise TlfError(f"{manifest_path}: no split manifest; run `tlf data split` first")
    manifest = read_json_file(manifest_path, "split manifest")
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict):
        raise TlfError(f"{manifest_path}: not the split manifest `tlf data split` writes (no 'splits' object)")
    for name, split in splits.items():
        check_name(name)
        if not isinstance(split, dict) or split.get("role", "train") not in ROLES:
            raise TlfError(f"{manifest_path}: splits.{name}: expected an object with its file and role "
                           f"({', '.join(ROLES)})")
        guard.component(split.get("file"), f"{manifest_path}: splits.{name}.file", "file name")
        counts = split.get("class_counts", {})
        if not isinstance(counts, dict) or not all(type(n) is int and n >= 0 for n in counts.values()):
            raise TlfError(f"{manifest_path}: splits.{name}.class_counts: expected class -> row count")
    return manifest_path, manifest


def _read_subset(path: Path) -> list[dict]:
    records = read_json_file(path, "subset")
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and all(isinstance(r.get(k, ""), str) for k in ("instruction", "input", "output"))
            for r in records):
        raise TlfError(f"{path}: expected a list of Alpaca records (instruction, input, output strings)")
    return [{"instruction": r.get("instruction", ""), "input": r.get("input", ""), "output": r.get("output", "")}
            for r in records]


def check(manifest_path: Path) -> CheckReport:
    """Leakage between train and test subsets, duplicates, empty answers, class counts."""
    manifest_path, manifest = read_manifest(manifest_path)
    base = manifest_path.parent
    loaded = {name: _read_subset(base / s["file"]) for name, s in manifest["splits"].items()}
    problems: list[str] = [str(w) for w in manifest.get("warnings", []) if isinstance(w, str)]
    for name, records in loaded.items():
        pairs = Counter((r["instruction"], r["input"], r["output"]) for r in records)
        duplicates = sum(n - 1 for n in pairs.values() if n > 1)
        if duplicates:
            problems.append(f"{name}: {duplicates} duplicate rows")
        empty = sum(1 for r in records if not str(r["output"]).strip())
        if empty:
            problems.append(f"{name}: {empty} empty answers")
    roles = {n: s.get("role", "train") for n, s in manifest["splits"].items()}
    for held in [n for n, r in roles.items() if r in ("test", "dev")]:
        others = [n for n, r in roles.items() if r == "train" or (r == "dev" and roles[held] == "test")]
        problems += _leakage(loaded, held, others)
    counts = {n: s.get("class_counts", {}) for n, s in manifest["splits"].items()}
    table = pd.DataFrame(counts).fillna(0).astype(int)
    table.loc["total"] = table.sum()
    return CheckReport(table=table, problems=problems)


def _leakage(loaded: dict[str, list[dict]], test: str, trains: list[str]) -> list[str]:
    test_q = {r["instruction"] for r in loaded[test]}
    test_norm = {normalise_question(r["instruction"]) for r in loaded[test]}
    test_qa = {(r["instruction"], r["output"]) for r in loaded[test]}
    problems = []
    for train in trains:
        same_q = sum(1 for r in loaded[train] if r["instruction"] in test_q)
        same_norm = sum(1 for r in loaded[train] if normalise_question(r["instruction"]) in test_norm)
        same_qa = sum(1 for r in loaded[train] if (r["instruction"], r["output"]) in test_qa)
        if same_qa or same_q or same_norm:
            covered = len({q for q in test_q if q in {r["instruction"] for r in loaded[train]}})
            problems.append(f"leakage {train} -> {test}: counted in rows of {train} ({len(loaded[train])} rows) "
                            f"against the {len(loaded[test])} rows of {test}: question+answer is in {test}: "
                            f"{same_qa}; same question: {same_q}; same question after normalising (NFKC, case, "
                            f"spaces, punctuation): {same_norm}; {covered} of the {len(loaded[test])} questions "
                            f"of {test} are seen in training")
    return problems
