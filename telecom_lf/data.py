"""Data stage: the competition file -> Alpaca JSON, balanced subsets, leakage check, registration.

Data flows one way: ``read_raw`` (validated rows) -> ``import_rows`` (Alpaca JSON + meta) ->
``plan_splits`` (pure: which rows go where) -> ``write_splits`` (files, manifest,
dataset_info.json). Nothing is written until every check has passed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import guard, lock, synth
from .errors import TlfError
from .fsutil import atomic_write, sha256_bytes, sha256_file, write_all

# The blog's instruction, byte for byte: ASCII commas, full-width question mark.
BLOG_INSTRUCTION = "回答中国电信手机用户的问题,{question},应该怎么做？"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
DATA_INFO = "dataset_info.json"
MANIFEST = "split_manifest.json"
ROLES = ("train", "test", "dev")
READABLE_SUFFIXES = (".csv", ".xlsx", ".xls", ".json", ".jsonl")
# Tried in order when no --encoding is given: a UTF-8 file (with or without BOM) never
# decodes as GB18030 by accident in practice, and GB18030 is a superset of GBK/GB2312.
FALLBACK_ENCODINGS = ("utf-8-sig", "gb18030")


@dataclass(frozen=True)
class RawRow:
    line: int          # 1-based position in the source: CSV/XLSX row, JSONL line, JSON record
    question: str
    answer: str
    category: str


def category_of(answer: str) -> str:
    """The balancing key derived from an answer: the label before ``_`` of its first item.

    ``业务简介_111|9.9|开通方式_98`` -> ``业务简介``; an item without ``_`` is its own label.
    """
    first = answer.split("|", 1)[0].strip()
    return first.split("_", 1)[0] if "_" in first else first


def normalise_question(text: str) -> str:
    """NFKC, lower case, no whitespace or punctuation: finds near-identical questions."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in folded if not (ch.isspace() or unicodedata.category(ch)[0] in "PS"))


# ---------------------------------------------------------------- reading raw files


def _read_text(path: Path, encoding: str | None) -> tuple[str, str]:
    blob = path.read_bytes()
    for candidate in (encoding,) if encoding else FALLBACK_ENCODINGS:
        try:
            return blob.decode(candidate), candidate
        except (UnicodeDecodeError, LookupError) as error:
            last = error
    tried = encoding or " or ".join(FALLBACK_ENCODINGS)
    raise TlfError(f"{path}: cannot decode as {tried} ({last}); pass --encoding")


def _read_frame(path: Path, encoding: str | None, sheet: str | None) -> tuple[pd.DataFrame, int, str]:
    """The raw table as strings, the 1-based line of its first data row, and the encoding."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import io

        text, used = _read_text(path, encoding)
        if not text.strip():
            raise TlfError(f"{path}: empty file; expected a header line and data rows")
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
            raise TlfError(f"{path}: not a readable CSV file ({error})") from None
        return frame, 2, used
    if suffix in (".xlsx", ".xls"):
        try:
            frame = pd.read_excel(path, sheet_name=sheet or 0, dtype=str, keep_default_na=False)
        except ValueError as error:  # unknown sheet name
            raise TlfError(f"{path}: {error}") from error
        except Exception as error:  # openpyxl/xlrd raise their own kinds for a file that is not a workbook
            raise TlfError(f"{path}: not a readable {suffix} workbook ({type(error).__name__}: {error})") from None
        return frame, 2, "xlsx"
    if suffix == ".jsonl":
        text, used = _read_text(path, encoding)
        records = [_json_record(line, path, f"line {number}") if line.strip() else {}
                   for number, line in enumerate(text.splitlines(), start=1)]
        return _frame(records), 1, used
    if suffix == ".json":
        text, used = _read_text(path, encoding)
        records = _json_value(text, path)
        if not isinstance(records, list):
            raise TlfError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        for number, record in enumerate(records, start=1):
            _check_record(record, path, f"record {number}")
        return _frame(records), 1, used
    raise TlfError(f"{path}: unsupported file type {suffix!r}; expected one of {READABLE_SUFFIXES}")


def _json_value(text: str, path: Path, where: str = ""):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        place = where or f"line {error.lineno}"
        raise TlfError(f"{path}: {place}: invalid JSON ({error.msg})") from None
    except RecursionError:
        raise TlfError(f"{path}: {where or 'the file'}: JSON nested too deeply") from None


def _json_record(line: str, path: Path, where: str) -> dict:
    return _check_record(_json_value(line, path, where), path, where)


def _check_record(record, path: Path, where: str) -> dict:
    """A raw record is an object whose values are text or numbers (a nested value is no answer)."""
    if not isinstance(record, dict):
        raise TlfError(f"{path}: {where}: expected a JSON object of columns, got {type(record).__name__}")
    for key, value in record.items():
        if isinstance(value, (dict, list)):
            raise TlfError(f"{path}: {where}, column {key!r}: expected text, got a JSON {type(value).__name__}")
    return record


def _frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records, dtype=str).fillna("")


def read_raw(
    path: Path,
    question_column: str = synth.QUESTION_COLUMN,
    answer_column: str = synth.ANSWER_COLUMN,
    category_column: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
    drop_duplicates: bool = False,
) -> list[RawRow]:
    """Validated rows of a competition-like file; the first problem found is a TlfError."""
    path = Path(path)
    if not path.is_file():
        raise TlfError(f"{path}: no such file")
    frame, first_line, _ = _read_frame(path, encoding, sheet)
    wanted = [question_column, answer_column] + ([category_column] if category_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        where = f"{path} (sheet {sheet or 'first'})" if path.suffix.lower() in (".xlsx", ".xls") else str(path)
        raise TlfError(f"{where}: missing column(s) {missing}; found {list(map(str, frame.columns))}")
    unit = "line" if path.suffix.lower() in (".csv", ".jsonl") else "row" if path.suffix.lower() != ".json" else "record"
    rows: list[RawRow] = []
    seen: dict[tuple[str, str], int] = {}
    for offset, record in enumerate(frame[wanted].itertuples(index=False)):
        line = first_line + offset
        values = ["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in record]
        question, answer = values[0].strip(), values[1].strip()
        if not any(v.strip() for v in values):
            raise TlfError(f"{path}: {unit} {line}: blank row")
        if not question:
            raise TlfError(f"{path}: {unit} {line}, column {question_column!r}: empty question")
        if not answer:
            raise TlfError(f"{path}: {unit} {line}, column {answer_column!r}: empty or whitespace answer")
        key = (question, answer)
        if key in seen:
            if drop_duplicates:
                continue
            raise TlfError(f"{path}: {unit} {line}: duplicate of {unit} {seen[key]} "
                           f"(same {question_column!r} and {answer_column!r}); pass --drop-duplicates to keep the first")
        seen[key] = line
        category = values[2].strip() if category_column else category_of(answer)
        if not category:
            raise TlfError(f"{path}: {unit} {line}, column {category_column!r}: empty category")
        rows.append(RawRow(line, question, answer, category))
    if not rows:
        raise TlfError(f"{path}: no data rows")
    return rows


def to_alpaca(rows: list[RawRow], instruction: str = BLOG_INSTRUCTION) -> list[dict[str, str]]:
    """The question put into the instruction by plain replacement of ``{question}``: no format
    string, so a brace elsewhere in the template is text, never a field lookup."""
    if "{question}" not in instruction:
        raise TlfError(f"instruction template {instruction!r} has no {{question}} placeholder")
    return [{"instruction": instruction.replace("{question}", r.question), "input": "", "output": r.answer}
            for r in rows]


def dump_alpaca(records: list[dict]) -> bytes:
    return (json.dumps(records, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _write_new(path: Path, payload: bytes, force: bool) -> None:
    """Write unless a different file is already there (refused without ``force``)."""
    if path.exists() and not force and path.read_bytes() != payload:
        raise TlfError(f"{path} exists with different content; pass --force to overwrite")
    atomic_write(path, payload)


def write_synthetic(out: Path, n_rows: int, seed: int, force: bool = False) -> None:
    rows = synth.generate(n_rows, seed)
    frame = pd.DataFrame({synth.QUESTION_COLUMN: [r.question for r in rows],
                          synth.ANSWER_COLUMN: [r.answer for r in rows]})
    suffix = out.suffix.lower()
    if suffix == ".csv":
        payload = frame.to_csv(index=False).encode("utf-8")
    elif suffix == ".json":
        payload = (frame.to_json(orient="records", force_ascii=False, indent=2) + "\n").encode("utf-8")
    elif suffix == ".jsonl":
        payload = frame.to_json(orient="records", force_ascii=False, lines=True).encode("utf-8")
    elif suffix == ".xlsx":
        import io

        buffer = io.BytesIO()
        frame.to_excel(buffer, index=False)
        payload = buffer.getvalue()
    else:
        raise TlfError(f"{out}: unsupported output type {suffix!r}; use .csv, .json, .jsonl or .xlsx")
    if out.exists() and not force:
        raise TlfError(f"{out} exists; pass --force to overwrite")
    atomic_write(out, payload)


# ---------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportResult:
    data_file: Path
    meta_file: Path
    rows: int


def import_rows(rows: list[RawRow], source: Path, out_dir: Path, name: str,
                instruction: str = BLOG_INSTRUCTION, force: bool = False) -> ImportResult:
    """Write ``NAME.json`` (Alpaca, the blog's three keys) and ``NAME.meta.json`` (categories)."""
    _check_name(name)
    payload = dump_alpaca(to_alpaca(rows, instruction))
    meta = {
        "source": str(Path(source).resolve()),
        "source_sha256": sha256_file(Path(source)),
        "instruction": instruction,
        "rows": len(rows),
        "categories": [r.category for r in rows],
        "source_lines": [r.line for r in rows],
    }
    data_file, meta_file = out_dir / f"{name}.json", out_dir / f"{name}.meta.json"
    refuse_inputs([data_file, meta_file], (Path(source),))
    meta_payload = (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    for path, blob in ((data_file, payload), (meta_file, meta_payload)):
        if path.exists() and not force and path.read_bytes() != blob:
            raise TlfError(f"{path} exists with different content; pass --force to overwrite")
    _write_new(data_file, payload, force)
    _write_new(meta_file, meta_payload, force)
    return ImportResult(data_file, meta_file, len(rows))


def load_imported(data_file: Path) -> tuple[list[dict], list[str], dict]:
    """Alpaca records, their categories (from the meta file, else derived), and the meta."""
    data_file = Path(data_file)
    records = read_json_file(data_file, "Alpaca JSON")
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("output"), str)
                                                and isinstance(r.get("instruction"), str) for r in records):
        raise TlfError(f"{data_file}: expected a list of records with 'instruction' and 'output' strings")
    meta_file = data_file.with_name(data_file.stem + ".meta.json")
    meta = read_json_file(meta_file, "import metadata") if meta_file.exists() else {}
    if not isinstance(meta, dict):
        raise TlfError(f"{meta_file}: expected the JSON object `tlf data import` writes")
    categories = meta.get("categories") or [category_of(str(r["output"])) for r in records]
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise TlfError(f"{meta_file}: categories: expected a list of class names")
    if len(categories) != len(records):
        raise TlfError(f"{meta_file}: {len(categories)} categories for {len(records)} records")
    return records, categories, meta


def read_json_file(path: Path, what: str):
    """A JSON file's value; an unreadable or invalid file is named with what was expected."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TlfError(f"{path}: cannot read {what} ({getattr(error, 'strerror', None) or error})") from None
    return _json_value(text, Path(path))


# ---------------------------------------------------------------- splitting


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


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise TlfError(f"dataset name {name!r}: use letters, digits, '_', '-' and '.' only")
    guard.component(name, "dataset name", "data set name")


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


def default_requests(test_size: int = 100, train_sizes: tuple[int, ...] = (100, 400),
                     prefix: str = "telecom", mode: str = "holdout", dev_size: int | None = None) -> list[SubsetRequest]:
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
        _check_name(request.name)
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


def dataset_entry(file_name: str) -> dict:
    return {"file_name": file_name, "columns": dict(ALPACA_COLUMNS)}


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
    for path, blob in targets.items():
        if path.is_dir() or (path.exists() and not force and path.read_bytes() != blob):
            raise TlfError(f"{path} exists with different content; pass --force to overwrite")
    targets[out_dir / MANIFEST] = (json.dumps(manifest, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    info = register_into or out_dir / DATA_INFO
    refuse_inputs([*targets, info], inputs)
    entries = split_entries(manifest["splits"], out_dir, info)
    merged_info(info, entries, force)          # a refusal here writes nothing
    with _info_lock(info):
        merged = merged_info(info, entries, force)
        write_all({**targets, **({info: merged} if merged is not None else {})})


def refuse_inputs(outputs, inputs) -> None:
    """No output may be one of the command's inputs (or a directory)."""
    sources = {os.path.realpath(p) for p in inputs}
    for path in outputs:
        if os.path.realpath(path) in sources:
            raise TlfError(f"{path}: is one of this command's inputs; write the output elsewhere")
        if Path(path).is_dir():
            raise TlfError(f"{path}: is a directory; expected a file there")


def split_entries(splits: dict, split_dir: Path, info: Path) -> dict[str, dict]:
    """dataset_info.json entries for a manifest's splits, with file names relative to ``info``."""
    return {name: dataset_entry(relative_file(split_dir / split["file"], info.parent))
            for name, split in splits.items()}


def relative_file(data_file: Path, info_dir: Path) -> str:
    import os

    try:
        return os.path.relpath(data_file.resolve(), info_dir.resolve())
    except ValueError:
        return str(data_file.resolve())


# ---------------------------------------------------------------- registration


def _load_info(info: Path) -> dict:
    if not info.exists():
        return {}
    try:
        loaded = json.loads(info.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TlfError(f"{info}: not valid JSON ({error}); refusing to touch it") from None
    except RecursionError:
        raise TlfError(f"{info}: not valid JSON (nested too deeply); refusing to touch it") from None
    if not isinstance(loaded, dict):
        raise TlfError(f"{info}: expected a JSON object of dataset entries")
    return loaded


def check_registration(info: Path, entries: dict[str, dict], force: bool) -> None:
    existing = _load_info(info)
    for name, entry in entries.items():
        if name in existing and existing[name] != entry and not force:
            raise TlfError(f"{info}: entry {name!r} exists and differs "
                           f"(has {json.dumps(existing[name], ensure_ascii=False)}); pass --force to replace it")


def merged_info(info: Path, entries: dict[str, dict], force: bool = False) -> bytes | None:
    """``info`` with ``entries`` merged in, every other entry and the order kept; None when every
    entry is there already. A different entry under the same name is refused unless ``force``."""
    existing = _load_info(info)
    check_registration(info, entries, force)
    if all(existing.get(name) == entry for name, entry in entries.items()):
        return None
    merged = {**existing, **entries}
    return (json.dumps(merged, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _info_lock(info: Path):
    """Registrations into one dataset_info.json queue behind each other; the lock leaves no file."""
    return lock.transient(info) if info.parent.is_dir() else contextlib.nullcontext()


def register(info: Path, entries: dict[str, dict], force: bool = False, inputs: tuple[Path, ...] = ()) -> list[str]:
    """Merge ``entries`` into ``info`` under a lock, keeping every other entry and the order.

    Returns the names that changed. An identical entry is a no-op; a different one under
    the same name is refused unless ``force`` (then replaced in place). A refusal leaves the
    directory as it was: no lock file, no new directory.
    """
    info = Path(info)
    refuse_inputs([info], inputs)
    merged_info(info, entries, force)
    with _info_lock(info):
        before = _load_info(info)
        merged = merged_info(info, entries, force)
        if merged is not None:
            write_all({info: merged})
    return [name for name, entry in entries.items() if before.get(name) != entry]


# ---------------------------------------------------------------- checks


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
        _check_name(name)
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
            problems.append(f"leakage {train} -> {test}: {train} rows whose question+answer is in "
                            f"{test}: {same_qa}; same question: {same_q}; same question after "
                            f"normalising (NFKC, case, spaces, punctuation): {same_norm}")
    return problems


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
    from . import synth

    before, after = BLOG_INSTRUCTION.split("{question}")
    ceiling = {}
    for name, blob in files.items():
        rows = json.loads(blob)
        questions = [r["instruction"].removeprefix(before).removesuffix(after) for r in rows]
        reachable = sum(synth.derivable(q, r["output"]) for q, r in zip(questions, rows))
        ceiling[name.removesuffix(".json")] = {"acc": round(100 * reachable / max(len(rows), 1), 2), "why": CEILING_WHY}
    return ceiling
