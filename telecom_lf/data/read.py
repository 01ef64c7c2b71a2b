"""The competition file -> validated rows -> Alpaca JSON with its meta (``tlf data import``, ``synth``)."""

from __future__ import annotations

import csv
import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import inputs, synth
from ..errors import TlfError
from ..fsutil import atomic_write, sha256_file
from .common import (
    BLOG_INSTRUCTION,
    FALLBACK_ENCODINGS,
    READABLE_SUFFIXES,
    check_name,
    refuse_inputs,
)


@dataclass(frozen=True)
class RawRow:
    line: int          # 1-based position in the source: CSV/XLSX row, JSONL line, JSON record
    question: str
    answer: str
    category: str


class RawRows(list):
    """The rows, and the encoding they were read with ('xlsx' for a workbook)."""

    encoding: str = ""


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
    blob = inputs.read_input(path, "raw data")
    nul = blob.find(b"\x00")
    if nul >= 0 and encoding is None:   # UTF-16 has NULs, but is given with --encoding
        raise TlfError(f"{path}: cannot decode as text: a NUL byte at byte {nul} (a UTF-16 file: pass --encoding "
                       "utf-16)")
    for candidate in (encoding,) if encoding else FALLBACK_ENCODINGS:
        try:
            text = blob.decode(candidate)
        except (UnicodeDecodeError, LookupError) as error:
            last = error
            continue
        if not encoding and candidate == "gb18030":
            _refuse_mojibake(path, text)
        return text, candidate
    tried = encoding or " or ".join(FALLBACK_ENCODINGS)
    raise TlfError(f"{path}: cannot decode as {tried} ({last}); pass --encoding")


MAX_ROWS = 1_000_000                  # the CLI's own ceiling (`data synth --rows`): far above 5000 questions
MAX_WORKBOOK_BYTES = 256 * inputs.MIB   # decompressed (5000 rows: ~2 MiB); a 390 KB zip bomb: gigabytes


def _check_workbook(path: Path, suffix: str) -> None:
    """A regular file within the raw-data limit, and an .xlsx whose parts inflate to at most
    MAX_WORKBOOK_BYTES (the zip's own directory says, before anything is inflated)."""
    import zipfile

    inputs.check_input(path, "raw data")
    if suffix != ".xlsx":
        return
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as error:
        raise TlfError(f"{path}: not a readable .xlsx workbook ({error})") from None
    if inflated > MAX_WORKBOOK_BYTES:
        raise TlfError(f"{path}: its parts inflate to {inflated} bytes; a workbook may inflate to at most "
                       f"{MAX_WORKBOOK_BYTES} bytes ({MAX_WORKBOOK_BYTES // inputs.MIB} MiB); save it as CSV")


def _refuse_mojibake(path: Path, text: str) -> None:
    """GB18030 decodes nearly any bytes: a Latin-1 or Windows-1252 file (détection) comes out as
    rare ideographs. Chinese text read right is almost all common characters (GB2312, the
    6763 everyday hanzi and their punctuation); when more than 5 % of the non-ASCII characters
    (and at least 3) are rare, the guess was wrong: ask for the encoding instead of importing
    nonsense."""
    foreign = [ch for ch in text if ord(ch) > 127]
    rare = sum(1 for ch in foreign if not _in_gb2312(ch))
    if rare >= 3 and rare > 0.05 * len(foreign):
        sample = next((line for line in text.splitlines() if any(not _in_gb2312(ch) for ch in line if ord(ch) > 127)),
                      "")
        raise TlfError(f"{path}: not UTF-8, and read as GB18030 it is full of characters Chinese hardly uses (e.g. "
                       f"{inputs.quote(sample, 80)}); pass --encoding with the file's encoding, "
                       "e.g. latin-1 or cp1252 (or gb18030 to import it as it is)")


def _in_gb2312(char: str) -> bool:
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


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
        _check_workbook(path, suffix)
        try:
            frame = pd.read_excel(path, sheet_name=sheet or 0, dtype=str, keep_default_na=False,
                                  nrows=MAX_ROWS + 1)
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
) -> RawRows:
    """Validated rows of a competition-like file; the first problem found is a TlfError."""
    path = Path(path)
    inputs.check_input(path, "raw data")
    frame, first_line, used = _read_frame(path, encoding, sheet)
    if len(frame) > MAX_ROWS:
        raise TlfError(f"{path}: more than {MAX_ROWS} rows; tlf imports at most {MAX_ROWS}")
    wanted = [question_column, answer_column] + ([category_column] if category_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        where = f"{path} (sheet {sheet or 'first'})" if path.suffix.lower() in (".xlsx", ".xls") else str(path)
        raise TlfError(f"{where}: missing column(s) {inputs.quote(missing)}; found "
                       f"{inputs.quote(list(map(str, frame.columns[:50])))}")
    unit = (
        "line" if path.suffix.lower() in (".csv", ".jsonl") else "row" if path.suffix.lower() != ".json" else "record"
    )
    rows = RawRows()
    rows.encoding = used
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
            raise TlfError(
                f"{path}: {unit} {line}: duplicate of {unit} {seen[key]} "
                f"(same {question_column!r} and {answer_column!r}); pass --drop-duplicates to keep the first"
            )
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
    refuse_inputs([out], ())
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
    check_name(name)
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
        text = inputs.read_input(Path(path), "data set", what).decode("utf-8")
    except UnicodeDecodeError as error:
        raise TlfError(f"{path}: cannot read {what} ({getattr(error, 'strerror', None) or error})") from None
    return _json_value(text, Path(path))


# ---------------------------------------------------------------- splitting
