"""What every part of the data stage agrees on: the blog's instruction, the Alpaca columns, the file
names, what a data set name is, and that no output is one of the inputs."""

from __future__ import annotations

import re

from .. import guard, paths, rundir
from ..errors import TlfError

# The blog's instruction, byte for byte: ASCII commas, full-width question mark.
BLOG_INSTRUCTION = "回答中国电信手机用户的问题,{question},应该怎么做？"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
DATA_INFO = rundir.DATASET_INFO
MANIFEST = rundir.SPLIT_MANIFEST
ROLES = ("train", "test", "dev")
READABLE_SUFFIXES = (".csv", ".xlsx", ".xls", ".json", ".jsonl")
# Tried in order when no --encoding is given: a UTF-8 file (with or without BOM) never
# decodes as GB18030 by accident in practice, and GB18030 is a superset of GBK/GB2312.
FALLBACK_ENCODINGS = ("utf-8-sig", "gb18030")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise TlfError(f"dataset name {name!r}: use letters, digits, '_', '-' and '.' only")
    guard.component(name, "dataset name", "data set name")


def dataset_entry(file_name: str) -> dict:
    return {"file_name": file_name, "columns": dict(ALPACA_COLUMNS)}


def refuse_inputs(outputs, inputs) -> None:
    """No output may be one of the command's inputs, a directory or a special file (paths.check_output_file)."""
    for path in outputs:
        paths.check_output_file(path, "", inputs)
