"""``tlf probe``: the blog's "ask the example" check, as a batch over the base model and every run.

The blog closed its study when the best configuration "answered the example fully
correctly". A probe asks the same questions of the base model (as the blog did before
training) and of every trained run, greedy and batched through LLaMA-Factory's own predict
path with each run's template, and lays the answers side by side with the expected answer
where the question comes from a data set. Everything lives under
``<experiment>/report/probe/<key>/`` (key: a hash of the questions), so a rerun with the same
questions reuses every finished answer, and a new run only adds its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from . import inputs, processes, rundir, score, use
from .errors import Failed, TlfError
from .fsutil import atomic_write, sha256_bytes
from .rundir import Run
from .use import RunModel

DATASET = "tlf_probe"
REQUEST = "probe_request.json"
JOB_SCRIPT = "probe.sbatch"
MAX_QUESTIONS = 10_000
MAX_QUESTION_CHARS = use.MAX_QUESTION_CHARS


@dataclass(frozen=True)
class Question:
    prompt: str                 # the user turn, instruction included
    shown: str                  # what the user asked (the question without the wrapper)
    expected: str | None


@dataclass(frozen=True)
class Member:
    """One model that answers: the base model, or a run's adapter."""
    model: RunModel
    run: Run                    # the run whose predict YAML supplies everything else

    @property
    def label(self) -> str:
        return self.model.label


def check_question(text: str, where: str) -> str:
    if not text.strip():
        raise TlfError(f"{where}: empty question")
    if len(text) > MAX_QUESTION_CHARS:
        raise TlfError(f"{where}: {len(text)} characters; at most {MAX_QUESTION_CHARS} per question")
    return text


def read_questions_file(path: Path) -> list[dict]:
    """One question per line, or JSON lines ``{"question": ..., "expected": ...}``."""
    try:
        text = inputs.read_input(path, "questions").decode("utf-8")
    except UnicodeDecodeError as error:
        raise TlfError(f"{path}: not UTF-8 text (byte {error.start}); give one question per line "
                       "or JSON lines with \"question\"") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except ValueError as error:
                raise TlfError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                    or not isinstance(record.get("expected", ""), str):
                raise TlfError(f"{where}: expected {{\"question\": TEXT, \"expected\": TEXT (optional)}}")
            found.append({"question": check_question(record["question"], where), "expected": record.get("expected")})
        else:
            found.append({"question": check_question(line.strip(), where), "expected": None})
        if len(found) > MAX_QUESTIONS:
            raise TlfError(f"{path}: more than {MAX_QUESTIONS} questions")
    if not found:
        raise TlfError(f"{path}: no questions")
    return found


def _unwrap(wrapper: str | None, prompt: str) -> str:
    if wrapper is None:
        return prompt
    head, _, tail = wrapper.partition("{question}")
    if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
        return prompt[len(head):len(prompt) - len(tail)]
    return prompt


def _prompt_of(record: dict) -> str:
    extra = record.get("input") or ""
    return f"{record['instruction']}\n{extra}" if extra else str(record["instruction"])


def questions(run: Run, wrapper: str | None, asked: list[dict], from_set: str | None, rows: int,
              raw: bool) -> list[Question]:
    """The probe's questions, each with its expected answer when a predict set holds it."""
    known: dict[str, str] = {}
    for name in run.predict_sets:
        for record in use.dataset_rows(run.dataset_dir, name):
            known.setdefault(_prompt_of(record), str(record.get("output", "")))
    found = []
    for item in asked:
        prompt = item["question"] if raw or wrapper is None else wrapper.replace("{question}", item["question"])
        found.append(Question(prompt, item["question"], item["expected"] or known.get(prompt)))
    if from_set is not None or not asked:
        name = from_set or (run.predict_sets[0] if run.predict_sets else None)
        if name is None:
            raise TlfError("no questions: give --question, --questions or --from SET")
        for record in use.dataset_rows(run.dataset_dir, name)[:rows]:
            prompt = _prompt_of(record)
            found.append(Question(prompt, _unwrap(wrapper, prompt), str(record.get("output", ""))))
    return found


def probe_dir(report_dir: Path, asked: list[Question]) -> Path:
    key = sha256_bytes(json.dumps([q.prompt for q in asked], ensure_ascii=False).encode("utf-8"))[:12]
    return report_dir / "probe" / key


def _write_dataset(where: Path, asked: list[Question]) -> None:
    records = [{"instruction": q.prompt, "input": "", "output": q.expected or ""} for q in asked]
    atomic_write(where / f"{DATASET}.json", json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    info = {DATASET: {"file_name": f"{DATASET}.json",
                      "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}
    atomic_write(where / rundir.DATASET_INFO, json.dumps(info, indent=2) + "\n")


def _member_dir(where: Path, member: Member) -> Path:
    return where / member.label.replace("@", "-")


def _answers(where: Path, member: Member, count: int) -> list[str] | None:
    """The member's finished answers, or None when there are not ``count`` of them yet."""
    try:
        rows = score.read_predictions(_member_dir(where, member) / rundir.PREDICTIONS).rows
    except TlfError:
        return None
    return [row.predict for row in rows] if len(rows) == count else None


def _member_config(where: Path, member: Member) -> dict:
    return use.predict_config(member.run, member.model.args, {
        "eval_dataset": DATASET, "dataset_dir": str(where), "output_dir": str(_member_dir(where, member))})


def answer(where: Path, member: Member, count: int, echo) -> list[str]:
    """The member's greedy answers to every question: reused when finished, else predicted."""
    done = _answers(where, member, count)
    if done is not None:
        echo(f"  {member.label}: answers exist")
        return done
    config_path = where / f"{_member_dir(where, member).name}.yaml"
    atomic_write(config_path, yaml.safe_dump(_member_config(where, member), sort_keys=False, allow_unicode=True))
    log = where / f"{_member_dir(where, member).name}.log"
    echo(f"  {member.label}: predicting {count} question(s) ...")
    if processes.run_child(processes.lf_command(config_path), log) != 0:
        raise Failed(f"probe of {member.label} failed; log: {log}")
    found = _answers(where, member, count)
    if found is None:
        raise Failed(f"probe of {member.label}: LLaMA-Factory wrote no complete predictions; log: {log}")
    return found


def members(runs: list[Run], echo) -> list[Member]:
    """The base model of every distinct (model, template), then each trained run's adapter."""
    bases: dict[tuple, Member] = {}
    for run in runs:
        base = use.resolve(run, base=True)
        bases.setdefault((base.args["model_name_or_path"], base.args.get("template")), Member(base, run))
    found = [Member(RunModel("base" if len(bases) == 1 else f"base-{i + 1}", m.model.args, m.model.wrapper,
                             m.model.precision), m.run) for i, m in enumerate(bases.values())]
    for run in runs:
        if not run.trains:
            continue
        try:
            found.append(Member(use.resolve(run), run))
        except TlfError as error:
            echo(f"  {run.name}: skipped ({error})")
    return found


def _right(answer: str, expected: str | None) -> str:
    if expected is None:
        return ""
    return " ✓" if answer.strip() == expected.strip() else " ✗"


def terminal_table(asked: list[Question], answers: dict[str, list[str]], width: int = 100) -> str:
    labels = ["expected", *answers]
    pad = max(map(len, labels)) + 2
    lines = []
    for i, question in enumerate(asked):
        lines.append(f"[{i + 1}] {_clip(question.shown, width)}")
        if question.expected is not None:
            lines.append(f"    {'expected':<{pad}}{_clip(question.expected, width)}")
        for label, given in answers.items():
            lines.append(f"    {label:<{pad}}{_clip(given[i], width)}{_right(given[i], question.expected)}")
        lines.append("")
    totals = [f"{label} {sum(a.strip() == q.expected.strip() for a, q in zip(given, asked) if q.expected is not None)}"
              for label, given in answers.items()]
    graded = sum(q.expected is not None for q in asked)
    if graded:
        lines.append(f"exact matches of {graded} question(s) with an expected answer: " + ", ".join(totals))
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(asked: list[Question], answers: dict[str, list[str]]) -> str:
    header = ["#", "question", "expected", *answers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, question in enumerate(asked):
        cells = [str(i + 1), _cell(question.shown), _cell(question.expected or "–")]
        cells += [_cell(given[i]) + _right(given[i], question.expected) for given in answers.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def prepare(runs: list[Run], report_dir: Path, asked: list[Question]) -> Path:
    """The probe's directory: its data set and ``probe_request.json`` (what a submitted job reads)."""
    where = probe_dir(report_dir, asked)
    _write_dataset(where, asked)
    request = {"runs": [str(r.path) for r in runs], "questions": [asdict(q) for q in asked]}
    atomic_write(where / REQUEST, json.dumps(request, ensure_ascii=False, indent=1) + "\n")
    return where


def load_request(path: Path) -> tuple[list[Run], list[Question]]:
    """A probe prepared earlier (``--request``): its runs and questions."""
    from .rundir import open_run

    try:
        request = json.loads(inputs.read_input(path, "request"))
        runs = [open_run(Path(p)) for p in request["runs"]]
        asked = [Question(str(q["prompt"]), str(q["shown"]), q["expected"]) for q in request["questions"]]
    except (TypeError, KeyError, ValueError, RecursionError) as error:
        raise TlfError(f"{path}: not a probe request written by tlf probe ({inputs.quote(str(error))})") from None
    if not runs or not asked:
        raise TlfError(f"{path}: a probe request needs runs and questions")
    return runs, asked


def probe(runs: list[Run], where: Path, asked: list[Question], echo) -> str:
    """Every member answers every question; writes probe.md/probe.json; returns the terminal table."""
    answers = {}
    for member in members(runs, echo):
        answers[member.label] = answer(where, member, len(asked), echo)
    record = [{"question": q.shown, "prompt": q.prompt, "expected": q.expected,
               "answers": {label: given[i] for label, given in answers.items()}} for i, q in enumerate(asked)]
    atomic_write(where / "probe.json", json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    atomic_write(where / "probe.md", markdown_table(asked, answers))
    return terminal_table(asked, answers)
