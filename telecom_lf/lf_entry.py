"""``tlf-lf``: ``llamafactory-cli`` with tlf's blog-era templates registered in every process.

Usage is llamafactory-cli's own: ``tlf-lf train cfg.yaml [key=value ...]``. For distributed
runs LLaMA-Factory's launcher re-executes ``llamafactory/launcher.py`` under torchrun; each
worker is a fresh interpreter that would not know tlf's templates, so the launcher is pointed
at this file instead, whose ``__main__`` registers them and then runs the same ``run_exp``.
Every launch path of tlf (local runs, sbatch scripts, torchrun workers) comes through here.
"""

from __future__ import annotations

import sys

USAGE = """usage: tlf-lf COMMAND [ARGS]   (llamafactory-cli with tlf's blog-era templates registered)

  tlf-lf train CONFIG.yaml [key=value ...]    train or predict, as llamafactory-cli train
  tlf-lf chat CONFIG.yaml                     chat, as llamafactory-cli chat
  tlf-lf export CONFIG.yaml                   merge and export, as llamafactory-cli export
  tlf-lf env | version                        LLaMA-Factory's environment and version
  tlf-lf slurm-node --nproc-per-node N train CONFIG.yaml
                                              one srun task per node of a multi-node job (tlf step uses it)
  tlf-lf select CONFIG.yaml KEY CHECKPOINT OUTPUT [CHECKPOINT OUTPUT ...]
                                              predict CONFIG once per checkpoint (KEY=CHECKPOINT,
                                              output_dir=OUTPUT) in one process (tlf step select uses it)
  tlf-lf serve FD                             for each JSON list [[CONFIG, LOG], ...] read from stdin: train/
                                              predict each config in turn in this one process, its output
                                              appended to its LOG, stopping at the first failure; answers
                                              {"ok": ...} on file descriptor FD (tlf run and tlf demo use it)

Templates added: tlf_blog_default (LLaMA-Factory 0.6's `default`, the blog's prompts).
"""


def main() -> None:
    import os

    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if len(sys.argv) > 1 else 2)
    if sys.argv[1] == "select":
        select(sys.argv[2:])
        return
    if sys.argv[1] == "serve":
        serve(sys.argv[2:])
        return
    if sys.argv[1] == "slurm-node":
        # One srun task per node (see templates/_step_body.j2): tell LLaMA-Factory's launcher
        # where it is. It counts 0 devices on a CPU node, so the card count comes from tlf step.
        sys.argv.pop(1)
        nproc = "1"
        if len(sys.argv) > 2 and sys.argv[1] == "--nproc-per-node":
            nproc = sys.argv[2]
            del sys.argv[1:3]
        os.environ["FORCE_TORCHRUN"] = "1"
        os.environ["NNODES"] = os.environ.get("SLURM_NNODES", "1")
        os.environ["NODE_RANK"] = os.environ.get("SLURM_NODEID", "0")
        os.environ["NPROC_PER_NODE"] = nproc
    _prepare(sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "train" else None)
    from llamafactory import launcher

    # The launcher formats `torchrun ... {__file__} {args}`: make the workers run this file.
    launcher.__file__ = __file__
    launcher.launch()


def _prepare(config: str | None) -> None:
    """In every process that runs LLaMA-Factory: tlf's blog-era templates, and what the rendered
    config's header asks for: 0.6's prediction decoding, tlf's DoRA forward; a predict's shared
    base model when the process was started with TLF_SHARE_BASE=1 (basecache.py); the MLflow run a
    tracked train config logs into (tracking.py)."""
    from telecom_lf import basecache, compat, dora, tracking

    compat.register_blog_templates()
    compat.install_for(config)
    dora.install_for(config)
    basecache.install_for(config)
    tracking.install_for(config)


def select(argv: list[str]) -> None:
    """One predict config over several checkpoints, in this one process: Python and LLaMA-Factory
    are imported once, not once per checkpoint (seconds each on a GPU node)."""
    if len(argv) < 4 or len(argv) % 2:
        print(USAGE, end="", file=sys.stderr)
        sys.exit(2)
    config, key, pairs = argv[0], argv[1], list(zip(argv[2::2], argv[3::2]))
    _prepare(config)
    from llamafactory.train.tuner import run_exp

    base = _read_yaml(config)
    for checkpoint, output in pairs:
        print(f"tlf-lf select: {checkpoint} -> {output}", flush=True)
        run_exp({**base, key: checkpoint, "output_dir": output})
        _release_memory()


def serve(argv: list[str]) -> None:
    """One request after another in one process that stays: ``tlf run`` sends each run's configs,
    so Python, torch and LLaMA-Factory are imported once per ``tlf run`` (~10 s of a CPU process),
    not once per run or config. A failed request ends the process (the next one starts clean)."""
    import json
    import os

    if len(argv) != 1 or not argv[0].isdigit():
        print(USAGE, end="", file=sys.stderr)
        sys.exit(2)
    with os.fdopen(int(argv[0]), "w") as replies:
        for line in sys.stdin:
            ok = _run_configs([(str(c), str(log)) for c, log in json.loads(line)])
            replies.write(json.dumps({"ok": ok}) + "\n")
            replies.flush()
            if not ok:
                sys.exit(1)


def _run_configs(pairs: list[tuple[str, str]]) -> bool:
    """Each config in turn, its output (this process's stdout and stderr) appended to its own log
    and its header's set-up (decoding, DoRA forward) made first; False at the first failure,
    whose traceback ends that config's log."""
    import os
    import traceback

    from llamafactory.train.tuner import run_exp

    for config, log in pairs:
        sys.stdout.flush()
        sys.stderr.flush()
        with open(log, "ab") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
        print(f"tlf-lf serve: {config} (process {os.getpid()})", flush=True)
        try:
            _prepare(config)
            run_exp(_read_yaml(config))
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()
            return False
        finally:
            _release_memory()
    return True


def _read_yaml(path: str) -> dict:
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _release_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _worker() -> None:
    _prepare(sys.argv[1] if len(sys.argv) > 1 else None)
    from llamafactory.train.tuner import run_exp

    run_exp()


if __name__ == "__main__":
    # torchrun runs this file directly: argv is the YAML (and overrides), no sub-command.
    if len(sys.argv) > 1 and sys.argv[1] in ("train", "chat", "export", "env", "version", "api", "slurm-node",
                                             "select", "serve"):
        main()
    else:
        _worker()
