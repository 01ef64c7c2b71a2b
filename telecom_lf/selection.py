"""Checkpoint selection (``select:`` in a spec): every checkpoint of a run scored on a dev set,
the best one chosen, and the predict steps pointed at it.

The process work (one LLaMA-Factory predict per checkpoint) is the executor's ``step select``;
this module holds what it decides and records: which checkpoints are complete and which are
predicted already (a resumed selection predicts none twice), each one's scores, the choice
(the best metric; a tie goes to the earlier step), what pruning the optimizer states of the
other checkpoints frees, and ``selection.json`` with the ``selected`` link beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import rundir, score
from .errors import TlfError
from .fsutil import atomic_write
from .rundir import Run

# What a checkpoint holds beyond its weights, needed only to resume training from it.
RESUME_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint-N, by step (rundir's definition)."""
    return rundir.checkpoints(train_dir, complete=True)


def output_dir(run: Run, step: int) -> Path:
    return run.path / rundir.SELECT_DIR / rundir.checkpoint_name(step)


def predicted(run: Run, step: int) -> bool:
    return rundir.predictions_done(output_dir(run, step))


def scores(run: Run, step: int) -> dict:
    """tlf's scores of one checkpoint's dev predictions, with the epoch it was saved at."""
    rows = score.read_predictions(output_dir(run, step) / rundir.PREDICTIONS).rows
    result = score.score_rows(rows)
    state = rundir.read_json(run.train_dir / rundir.checkpoint_name(step) / rundir.TRAINER_STATE)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return {"step": step, "epoch": epoch, **result}


def choose(scored: list[dict], metric: str) -> dict:
    """The checkpoint with the best ``metric``; a tie goes to the earlier step (fewer steps,
    the same score: the simpler model). A checkpoint without the metric is never chosen."""
    valid = [s for s in scored if isinstance(s.get(metric), (int, float))]
    if not valid:
        raise TlfError(f"no checkpoint has a {metric} score (every dev label empty or short?); "
                       "choose another select.metric")
    best = max(s[metric] for s in valid)
    return min((s for s in valid if s[metric] == best), key=lambda s: s["step"])


def prune(found: list[tuple[int, Path]]) -> int:
    """Delete the resume state (optimizer, scheduler, RNG) of every checkpoint but the last: the
    weights stay, so each checkpoint can still be loaded, and the last can still be resumed.
    Returns the bytes freed."""
    freed = 0
    for _step, path in found[:-1]:
        for name in [*RESUME_STATE, *(p.name for p in path.glob("rng_state_*.pth"))]:
            target = path / name
            if target.is_file():
                freed += target.stat().st_size
                target.unlink()
    return freed


def record(run: Run, scored: list[dict], chosen: dict, freed: int, final_step: int) -> dict:
    """selection.json, then the ``selected`` link to the chosen checkpoint (replaced atomically)."""
    select = run.select
    selection = {
        "on": select["on"], "metric": select["metric"], "every": select["every"],
        "checkpoints": scored, "chosen": {"step": chosen["step"], "epoch": chosen.get("epoch"),
                                          select["metric"]: chosen[select["metric"]]},
        "final_step": final_step, "ties": "the earlier step", "pruned_bytes": freed,
    }
    atomic_write(run.path / rundir.SELECTION, json.dumps(selection, ensure_ascii=False, indent=2) + "\n")
    link = run.path / rundir.SELECTED
    temporary = run.path / f".{rundir.SELECTED}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(f"{rundir.TRAIN_DIR}/{rundir.checkpoint_name(chosen['step'])}")
    os.replace(temporary, link)
    return selection
