"""Data stage: the competition file -> Alpaca JSON, balanced subsets, leakage check, registration.

Data flows one way: ``read_raw`` (validated rows) -> ``import_rows`` (Alpaca JSON + meta) ->
``plan_splits`` (pure: which rows go where) -> ``write_splits`` (files, manifest,
dataset_info.json). Nothing is written until every check has passed.
"""

from __future__ import annotations

from .check import (
    CheckReport,
    check,
    read_manifest,
)
from .common import (
    ALPACA_COLUMNS,
    BLOG_INSTRUCTION,
    DATA_INFO,
    FALLBACK_ENCODINGS,
    MANIFEST,
    READABLE_SUFFIXES,
    ROLES,
    check_name,
    dataset_entry,
    refuse_inputs,
)
from .read import (
    ImportResult,
    RawRow,
    category_of,
    dump_alpaca,
    import_rows,
    load_imported,
    normalise_question,
    read_json_file,
    read_raw,
    to_alpaca,
    write_synthetic,
)
from .register import (
    check_registration,
    merged_info,
    register,
    relative_file,
    split_entries,
)
from .split import (
    CEILING_WHY,
    DEV_SIZE,
    SplitPlan,
    SubsetRequest,
    default_requests,
    largest_remainder,
    plan_splits,
    prepare_synthetic,
    render_splits,
    synthetic_ceiling,
    write_splits,
)

__all__ = [
    "ALPACA_COLUMNS", "BLOG_INSTRUCTION", "CEILING_WHY", "CheckReport", "DATA_INFO", "DEV_SIZE",
    "FALLBACK_ENCODINGS", "ImportResult", "MANIFEST", "READABLE_SUFFIXES", "ROLES", "RawRow", "SplitPlan",
    "SubsetRequest", "category_of", "check", "check_name", "check_registration", "dataset_entry",
    "default_requests", "dump_alpaca", "import_rows", "largest_remainder", "load_imported", "merged_info",
    "normalise_question", "plan_splits", "prepare_synthetic", "read_json_file", "read_manifest", "read_raw",
    "refuse_inputs", "register", "relative_file", "render_splits", "split_entries", "synthetic_ceiling",
    "to_alpaca", "write_splits", "write_synthetic",
]
