"""``tlf chat``: talk to what a run trained, as its predict step would answer.

The blog's author chatted with the base model before training (``cli_demo.py --template
default``) and with the adapter after it. ``llamafactory-cli chat`` cannot do that faithfully
for a tlf run: it knows neither tlf's blog-era templates nor the data's instruction, and
0.9.5's ``default`` template is not the one the blog trained with. Here the model, adapter,
template and decoding are the run's own (``use.resolve``), every question is wrapped in the
data's instruction (``--raw`` to type whole prompts), and each question is asked fresh, as
the predict step asks it (``--history`` keeps the conversation instead).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys

from . import guard, use
from .errors import TlfError
from .use import RunModel

BANNER = ("tlf chat: {label}\n  model {model}\n  adapter {adapter}\n  template {template}, decoding {decoding}\n"
          "{wrapping}\nType a question. `exit` or Ctrl-D ends, Ctrl-C stops, `clear` forgets the conversation.")


def banner(model: RunModel, raw: bool) -> str:
    if raw or model.wrapper is None:
        wrapping = "  prompts are sent as typed" + ("" if raw else " (the data recorded no instruction)")
    else:
        wrapping = f"  each question is sent as: {model.wrapper}"
    decoding = "sampled" if model.args.get("do_sample", True) else "greedy"
    if os.environ.get("SLURM_JOB_ID"):
        wrapping += (f"\n  on {os.environ.get('SLURMD_NODENAME', platform.node())}, "
                     f"Slurm job {os.environ['SLURM_JOB_ID']}")
    return BANNER.format(label=model.label, model=model.args["model_name_or_path"],
                         adapter=model.adapter or "none (the base model)",
                         template=model.args.get("template", "?"), decoding=decoding, wrapping=wrapping)


def _load(model: RunModel):
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")   # the chat, not the loading log
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from llamafactory.chat import ChatModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()       # "Loading weights" would land between the banner and the prompt

    from .compat import register_blog_templates

    register_blog_templates()
    args = use.infer_args(model)
    try:
        return ChatModel(args)
    except (OSError, ValueError) as error:   # LLaMA-Factory's "Failed to load tokenizer." names no path
        where = ", ".join(f"{key} {args[key]}" for key in ("model_name_or_path", "adapter_name_or_path") if key in args)
        raise TlfError(f"cannot load the model ({where}): {str(error).strip()[:300]}; is the path there, from this "
                       "machine?") from None


def _stop(engine) -> None:
    """Stop ChatModel's event-loop thread before the interpreter exits: left running, it can
    abort the process at shutdown ("terminate called without an active exception")."""
    loop = getattr(engine, "_loop", None)
    thread = getattr(engine, "_thread", None)
    if loop is not None and thread is not None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def _turns(model: RunModel, engine, raw: bool, history: bool, read=input, write=print) -> None:
    messages: list[dict] = []
    while True:
        try:
            line = read("\nYou: ")
        except EOFError:
            write("")
            return
        text = line.strip()
        refusal = _refusal(text)
        if refusal:
            write(refusal)
            continue
        if text == "exit":
            return
        if text == "clear":
            messages = []
            write("(conversation cleared)")
            continue
        if not text:
            continue
        turn = [
            *messages,
            {"role": "user", "content": use.wrap(model, text, raw)},
        ]  # messages stay [] without --history
        answer = engine.chat(turn)[0].response_text
        write(f"Model: {guard.printable(answer)}")
        if history:
            messages = [*turn, {"role": "assistant", "content": answer}]


def _refusal(text: str) -> str | None:
    """Why a typed line is not asked: bytes that are not UTF-8 (read as surrogate escapes), or a
    question longer than probe takes."""
    if not guard.is_text(text):
        return "(that line is not UTF-8 text; nothing was asked: set your terminal to UTF-8 and type it again)"
    if len(text) > use.MAX_QUESTION_CHARS:
        return f"(that line has {len(text)} characters; a question may have at most {use.MAX_QUESTION_CHARS})"
    return None


def chat(model: RunModel, raw: bool = False, history: bool = False) -> int:
    """The interactive loop; returns the exit status (0 on exit/EOF, 130 on Ctrl-C)."""
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")   # bytes that are not UTF-8: refused per line, no traceback
    print(banner(model, raw), flush=True)
    engine = _load(model)
    try:
        _turns(model, engine, raw, history)
        return 0
    except KeyboardInterrupt:
        print("", flush=True)
        return 130
    finally:
        _stop(engine)
        sys.stdout.flush()


def srun_command(prefix: list[str], setup: list[str], python: str, tlf_args: list[str]) -> list[str]:
    """``srun --pty`` inside an allocation from the run's cluster profile, running the site's
    set-up lines (a failing one stops it) and then this same chat (login nodes have no card)."""
    chat_line = "exec " + shlex.join([python, "-m", "telecom_lf.cli", "chat", *tlf_args])
    script = "\n".join(["set -e", *setup, chat_line])
    return [*prefix, "--pty", "bash", "-c", script]
