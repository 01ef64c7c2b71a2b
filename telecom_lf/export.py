"""``tlf export``: a merged, standalone model from a run, checked against the adapter it came from.

``llamafactory-cli export`` merges the adapter into the base weights (PEFT does the merge,
DoRA and rsLoRA included) and saves the tokenizer. tlf adds what a shipped model needs and
what LLaMA-Factory does not check: a model card (spec, run, checkpoint, scores, template,
instruction, versions), and a verification that the merged model answers as the adapter did:
greedy predictions on the first N rows of the run's test set, through the same predict path
and template, must be identical (LLaMA-Factory and PEFT have both shipped merge bugs).
The export is built in a sibling work directory and moved into place only when verified.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import lfargs, paths, processes, rundir, score, use
from .errors import Failed, TlfError
from .fsutil import atomic_write, default_mode, remove_stale_directories
from .rundir import Run
from .use import RunModel

RECORD = "tlf_export.json"
CARD = "README.md"
CHAT_FILE = "tlf_chat.yaml"
CARD_TRAIN_KEYS = ("finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora",
                   "use_dora", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "cutoff_len")


class ExportMismatch(Failed):
    pass


@dataclass(frozen=True)
class Verification:
    dataset: str
    rows: int
    differing: list[dict]        # {row, adapter, merged} for every row whose answers differ


def verify_set(run: Run) -> str:
    """The run's test set (role ``test`` in the split manifest), else its first predict set."""
    if not run.predict_sets:
        raise TlfError(f"run {run.name} predicts no set; nothing to verify the export on")
    manifest = rundir.read_json(run.split_manifest) if run.split_manifest else None
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else {}
    tests = [s for s in run.predict_sets if isinstance(splits.get(s), dict) and splits[s].get("role") == "test"]
    return (tests or run.predict_sets)[0]


def _predict(run: Run, dataset: str, model_args: dict, rows: int, work: Path, label: str) -> list[str]:
    """Greedy predictions of ``model_args`` on the first ``rows`` rows, through the run's predict path."""
    config = use.predict_config(run, model_args, {"max_samples": rows, "output_dir": str(work / label)}, dataset)
    path = work / f"{label}.yaml"
    atomic_write(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    log = work / f"{label}.log"
    if processes.run_child(processes.lf_command(path), log) != 0:
        raise Failed(f"the {label} predictions for the export check failed; log: {log}")
    return [row.predict for row in score.read_predictions(work / label / rundir.PREDICTIONS).rows]


def verify(run: Run, model: RunModel, export_dir: Path, rows: int, work: Path) -> Verification:
    dataset = verify_set(run)
    adapter = _predict(run, dataset, model.args, rows, work, "adapter")
    merged_args = {k: v for k, v in model.args.items() if k not in ("adapter_name_or_path", "model_name_or_path")}
    merged = _predict(run, dataset, {**merged_args, "model_name_or_path": str(export_dir)}, rows, work, "merged")
    differing = [{"row": i, "adapter": a, "merged": m} for i, (a, m) in enumerate(zip(adapter, merged)) if a != m]
    if len(adapter) != len(merged):
        differing.append({"row": min(len(adapter), len(merged)), "adapter": f"{len(adapter)} rows",
                          "merged": f"{len(merged)} rows"})
    return Verification(dataset, len(adapter), differing)


def _merge(model: RunModel, export_dir: Path, work: Path) -> None:
    config = {**use.infer_args(model), "export_dir": str(export_dir), "export_size": 5, "export_legacy_format": False}
    path = work / "export.yaml"
    atomic_write(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    log = work / "export.log"
    if processes.run_child([sys.executable, "-m", "telecom_lf.lf_entry", "export", str(path)], log) != 0:
        raise Failed(f"llamafactory export failed; log: {log}")


def export(run: Run, model: RunModel, out: Path, rows: int, force: bool, allow_diff: int, echo) -> Verification:
    """Merge, verify, write the card, then move the whole directory into place."""
    if model.adapter is None:
        raise TlfError(f"run {run.name}: no adapter to merge (a base model or a full fine-tune is already standalone)")
    out = out.absolute()
    paths.claim_directory(out, "export", force, "--to", inputs=[run.path, model.adapter,
                                                                 model.args["model_name_or_path"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_directories(out.parent, f".{out.name}.tlf-")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tlf-", dir=out.parent))
    staged = work / "model"
    echo(f"export: merging {model.adapter} into {model.args['model_name_or_path']} (llamafactory export) ...")
    _merge(model, staged, work)
    echo(f"export: checking the merged model against the adapter on {rows} rows (greedy) ...")
    result = verify(run, model, staged, rows, work)
    _report(result, allow_diff, work, echo)
    write_card(staged, run, model, result, out)
    (staged / paths.MARKER).write_bytes(paths.marker("export", [p.name for p in staged.iterdir()]))
    for path in staged.rglob("*"):   # a shipped model is read by others: not 0600 (safetensors' own mode)
        path.chmod(default_mode(directory=path.is_dir()))
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    shutil.rmtree(work)
    return result


def _report(result: Verification, allow_diff: int, work: Path, echo) -> None:
    for row in result.differing[:10]:
        echo(
            f"  row {row['row']}: adapter {row['adapter']!r}\n"
            f"  {'':>{len(str(row['row'])) + 4}}merged  {row['merged']!r}"
        )
    if len(result.differing) > allow_diff:
        raise ExportMismatch(f"the merged model answers {len(result.differing)} of {result.rows} rows of "
                             f"{result.dataset} differently from the adapter (rows "
                             f"{', '.join(str(r['row']) for r in result.differing[:20])}); nothing was exported; "
                             f"work files kept in {work}")
    echo(f"export: {result.rows - len(result.differing)}/{result.rows} rows of {result.dataset} identical")


def verify_existing(run: Run, model: RunModel, export_dir: Path, rows: int, allow_diff: int, echo) -> Verification:
    """``--verify-only``: check an export made earlier (or by hand) against the run's adapter."""
    if not (export_dir / rundir.MODEL_CONFIG).is_file():
        raise TlfError(f"{export_dir}: no config.json; not an exported model")
    work = Path(tempfile.mkdtemp(prefix=".tlf-verify-"))
    result = verify(run, model, export_dir.absolute(), rows, work)
    _report(result, allow_diff, work, echo)
    shutil.rmtree(work)
    return result


def write_card(export_dir: Path, run: Run, model: RunModel, result: Verification, final_dir: Path) -> None:
    """The model card, record and chat config, written into ``export_dir`` and naming ``final_dir``."""
    train = use.read_config(run.config("train")) or {}
    scores = (rundir.read_json(run.path / rundir.SCORES) or {}).get("sets", {})
    record = {
        "run": str(run.path), "label": model.label, "base_model": model.args["model_name_or_path"],
        "adapter": model.adapter, "template": model.args.get("template"), "instruction": model.wrapper,
        "training": {k: train[k] for k in CARD_TRAIN_KEYS if k in train},
        "data": {"directory": run.manifest.dataset_dir, "training set": train.get("dataset"),
                 "dev set (checkpoint selection)": (run.manifest.select or {}).get("on"),
                 "scored on": run.predict_sets},
        "spec": run.manifest.spec, "versions": lfargs.installed_versions(),
        "scores": {s: {k: v for k, v in sc.items() if not isinstance(v, (dict, list))} for s, sc in scores.items()},
        "verification": {"dataset": result.dataset, "rows": result.rows, "differing": result.differing},
    }
    atomic_write(export_dir / RECORD, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    atomic_write(export_dir / CARD, card_text(record, final_dir))
    chat = {"model_name_or_path": str(final_dir), "template": record["template"], "do_sample": False}
    atomic_write(export_dir / CHAT_FILE, yaml.safe_dump(chat, sort_keys=False, allow_unicode=True))


def card_text(record: dict, export_dir: Path) -> str:
    lines = [
        f"# {record['label']}: merged by tlf",
        "",
        f"Base model `{record['base_model']}` with the LoRA adapter `{record['adapter']}` merged in "
        f"(LLaMA-Factory {record['versions'].get('llamafactory', '?')}, PEFT {record['versions'].get('peft', '?')}).",
        "",
        "## Prompt",
        "",
        f"- template: `{record['template']}` (LLaMA-Factory; `tlf_blog_*` templates are registered by `tlf-lf`)",
    ]
    if record["instruction"]:
        lines.append(f"- every question was wrapped as: `{record['instruction']}`")
    lines += ["", "## Data", ""] + [f"- {k}: `{', '.join(v) if isinstance(v, list) else v}`"
                                     for k, v in record["data"].items() if v]
    lines += ["", "## Training", ""] + [f"- {k}: `{v}`" for k, v in record["training"].items()]
    lines += ["", "## Scores of the adapter (tlf score)", ""]
    for name, sc in record["scores"].items():
        shown = ", ".join(f"{k} {sc[k]}" for k in ("acc", "long_recall", "rouge-1", "bleu-4") if k in sc)
        lines.append(f"- {name}: {shown}")
    check = record["verification"]
    lines += [
        "",
        "## Verification",
        "",
        f"Greedy answers of this merged model and of the adapter on the first {check['rows']} rows of "
        f"`{check['dataset']}`: {check['rows'] - len(check['differing'])} identical.",
        "",
        "## Use",
        "",
        "```",
        f"tlf-lf chat {export_dir / CHAT_FILE}     # LLaMA-Factory's chat, with tlf's templates",
        "```",
        "",
        "Type the wrapped question (the instruction above) for the answers the study scored.",
        "",
        f"Versions: {json.dumps(record['versions'])}",
        f"Run: `{record['run']}`",
        "",
    ]
    return "\n".join(lines)
