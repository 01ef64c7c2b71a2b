"""``tlf data ...`` and ``tlf model ...``: the data stage's commands and the local models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import guard, paths
from .cli_base import Group, say
from .errors import TlfError
from .synth import MAX_ROWS as SYNTH_MAX_ROWS


@click.group(cls=Group)
def data() -> None:
    """Data stage: synthetic or real competition rows -> Alpaca JSON, subsets, checks."""


@data.command("synth")
@click.option("--rows", "n_rows", type=click.IntRange(min=1, max=SYNTH_MAX_ROWS), default=5000, show_default=True,
              help=f"Rows to write (at most {SYNTH_MAX_ROWS}, the distinct rows the patterns make well: the "
                   "competition has 5000).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV/XLSX/JSON/JSONL file, by suffix, with the competition's columns.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def data_synth(n_rows: int, seed: int, out: Path, force: bool) -> None:
    """Write competition-like raw rows (用户问题, 答案); same seed, same bytes."""
    from . import data as data_stage

    data_stage.write_synthetic(out, n_rows=n_rows, seed=seed, force=force)
    say(f"wrote {n_rows} rows to {out}")


@data.command("import")
@click.argument("raw", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default="telecom_all", show_default=True, help="Output file stem.")
@click.option("--question-column", default="用户问题", show_default=True)
@click.option("--answer-column", default="答案", show_default=True)
@click.option("--category-column", default=None,
              help="Balance by this column; default: the label before '_' of the answer's first item.")
@click.option("--encoding", default=None, help="Source encoding; default: UTF-8, else GB18030.")
@click.option("--sheet", default=None, help="XLSX sheet name (default: the first).")
@click.option("--instruction", default=None,
              help="Instruction template with {question}; default: the blog's, byte for byte.")
@click.option("--drop-duplicates", is_flag=True, help="Keep the first of identical rows instead of failing.")
@click.option("--force", is_flag=True, help="Overwrite existing output files that differ.")
def data_import(raw: Path, out_dir: Path, name: str, question_column: str, answer_column: str,
                category_column: str | None, encoding: str | None, sheet: str | None,
                instruction: str | None, drop_duplicates: bool, force: bool) -> None:
    """Read the competition file (CSV/XLSX/JSON/JSONL) and write Alpaca JSON."""
    from . import data as data_stage

    rows = data_stage.read_raw(raw, question_column, answer_column, category_column,
                               encoding, sheet, drop_duplicates)
    result = data_stage.import_rows(rows, raw, out_dir, name,
                                    instruction or data_stage.BLOG_INSTRUCTION, force)
    how = ("given with --encoding" if encoding else
           "detected: not UTF-8; pass --encoding if that is wrong" if rows.encoding == "gb18030" else "detected")
    if rows.encoding != "xlsx":
        say(f"read {raw} as {ENCODING_NAMES.get(rows.encoding, rows.encoding)} ({how})")
    say(f"wrote {result.rows} rows to {result.data_file} (categories in {result.meta_file.name})")


ENCODING_NAMES = {"utf-8-sig": "UTF-8", "gb18030": "GB18030"}


@data.command("split")
@click.argument("imported", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the subsets (default: beside IMPORTED).")
@click.option("--mode", type=click.Choice(["holdout", "blog"]), default="holdout", show_default=True,
              help="blog: also write <prefix>_train_<N> with every row, as the blog did (test rows leak).")
@click.option("--test-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--train-sizes", default="100,400", show_default=True, help="Nested train subset sizes.")
@click.option("--dev-size", type=click.IntRange(min=0), default=None,
              help="Rows of <prefix>_dev_<N>, held out from every train subset, for checkpoint selection "
                   "(default: 200 where the data has them; 0: none).")
@click.option("--prefix", default="telecom", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--register-into", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="dataset_info.json to merge the entries into (default: OUT/dataset_info.json).")
@click.option("--strict-holdout", is_flag=True,
              help="Keep rows whose normalised question equals a test row's out of the train subsets.")
@click.option("--force", is_flag=True, help="Overwrite differing files and entries.")
def data_split(imported: Path, out_dir: Path | None, mode: str, test_size: int, train_sizes: str, dev_size: int | None,
               prefix: str, seed: int, register_into: Path | None, strict_holdout: bool, force: bool) -> None:
    """Cut seeded, class-balanced subsets (largest remainder) and register them."""
    from . import data as data_stage

    try:
        sizes = tuple(int(s) for s in train_sizes.split(",") if s.strip())
    except ValueError as error:
        raise TlfError(f"--train-sizes {train_sizes!r}: expected comma-separated integers") from error
    records, categories, meta = data_stage.load_imported(imported)
    requests = data_stage.default_requests(test_size, sizes, prefix, mode, dev_size)
    questions = [r["instruction"] for r in records] if strict_holdout else None
    plan = data_stage.plan_splits(categories, requests, seed, mode, questions)
    files, manifest = data_stage.render_splits(records, categories, plan, meta, imported)
    out_dir = out_dir or imported.parent
    inputs = (imported, imported.with_name(imported.stem + ".meta.json"))
    data_stage.write_splits(out_dir, files, manifest, force, register_into, inputs)
    for warning in plan.warnings:
        click.secho(f"WARNING: {guard.printable(warning)}", fg="red", bold=True, err=True)
    for name, split in manifest["splits"].items():
        say(f"{name:28s} {split['rows']:6d} rows  ({split['role']})")
    if strict_holdout:
        say(f"strict hold-out: {plan.excluded} rows kept out of the train subsets "
                   "(their normalised question is a test or dev question)")
    say(f"manifest: {out_dir / data_stage.MANIFEST}")


@data.command("check")
@click.argument("split_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 1 when any problem (leakage included) is found.")
def data_check(split_dir: Path, strict: bool) -> None:
    """Report train/test leakage, duplicates, empty answers and class counts per split of DIR
    (what `tlf data split --out DIR` wrote; its split_manifest.json also works)."""
    import pandas as pd

    from . import data as data_stage

    report = data_stage.check(split_dir)
    with pd.option_context("display.unicode.east_asian_width", True):  # Chinese category names align
        say(report.table.to_string())
    for problem in report.problems:
        say(f"PROBLEM: {problem}")
    if not report.problems:
        say("no leakage, duplicates or empty answers found")
    if strict and report.problems:
        sys.exit(1)


@data.command("register")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--into", "info", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The dataset_info.json to merge into, e.g. LLaMA-Factory/data/dataset_info.json.")
@click.option("--force", is_flag=True, help="Replace entries of the same name that differ.")
def data_register(manifest: Path, info: Path, force: bool) -> None:
    """Merge a split's entries into another dataset_info.json, keeping all its entries."""
    from . import data as data_stage

    manifest, content = data_stage.read_manifest(manifest)
    splits = content["splits"]
    entries = data_stage.split_entries(splits, manifest.parent, info)
    inputs = (manifest, *(manifest.parent / split["file"] for split in splits.values()))
    changed = data_stage.register(info, entries, force, inputs)
    say(f"{info}: {len(changed)} entries added or replaced, {len(entries) - len(changed)} unchanged")


@click.group(cls=Group)
def model() -> None:
    """Local models for tests and the demo."""


@model.command("tiny")
@click.option("--arch", type=click.Choice(["gemma", "llama"]), default="gemma", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def model_tiny(arch: str, out: Path, force: bool) -> None:
    """Build a tiny random-weight causal LM with a locally trained tokenizer.

    Random: it knows nothing, so a LoRA on it scores 0 % whatever its settings (tests use it);
    `tlf model demo-base` builds the demo's pre-trained one."""
    from . import tiny

    paths.claim_directory(out, "model", force, "--out")
    tiny.build(out, tiny.TinySpec(arch=arch))
    say(f"wrote tiny {arch} model to {out}")


@model.command("demo-base")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--pretrain", is_flag=True,
              help="Pre-train it here (~40 s) instead of copying the shipped one; the weights then depend "
                   "on this machine's CPU and thread count.")
@click.option("--force", is_flag=True, help="Replace a model directory tlf wrote.")
def model_demo_base(out: Path, pretrain: bool, force: bool) -> None:
    """The demo's base model: a tiny Gemma pre-trained on the synthetic catalogue.

    A random tiny model scores 0 % whatever LoRA does; this one has learnt the products the
    synthetic questions are about, standing in for what gemma-2b knows. By default a copy of the
    one shipped in experiments/demo-base (checked against its sha256), so that results do not
    change with the machine; --pretrain builds it here with the recipe recorded in its
    tlf_demo_base.json."""
    from . import demo, processes

    paths.claim_directory(out, "model", force, "--out")
    with paths.staged_directory(out, "model") as staged:
        if pretrain:
            with processes.Worker() as worker:
                built = demo.pretrain_base_model(staged, say, worker)
        else:
            built = demo.copy_shipped_base(staged)
    how = "pre-trained here" if pretrain else f"a copy of {demo.shipped_base()}, built on {built['date'][:10]}"
    say(f"wrote the demo's pre-trained base model to {out} ({how}; final pre-training loss {built['final_loss']:.3f})")
