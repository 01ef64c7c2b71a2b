"""The hostile-input suite: every command fed what an attacker (or a typo) would feed it.

Each case runs the real ``tlf`` command line in-process (click's runner, so the corpus runs in
seconds) on real files, and asserts four things: the exit code, a message naming the file,
line or key, no traceback and no "internal error", and that nothing was written anywhere
(every file, link, mode and byte under the work directory, the shared data set and the model
compared before and after). A refusal that leaves a lock file or an empty directory fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from telecom_lf.cli import main

pytestmark = pytest.mark.unit

DATA = "telecom_test_100"


def snapshot(*roots: Path) -> dict:
    """Every entry under ``roots``: kind, mode, and content (or link target)."""
    state = {}
    for root in roots:
        if not os.path.lexists(root):
            state[str(root)] = None
            continue
        for directory, dirs, files in os.walk(root):
            for name in [".", *dirs, *files]:
                path = Path(directory, name)
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    content = os.readlink(path)
                elif stat.S_ISREG(info.st_mode):
                    content = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    content = None
                state[str(path)] = (stat.S_IFMT(info.st_mode), info.st_mode & 0o7777, content)
    return state


@dataclass
class Case:
    id: str
    args: list[str]                       # tlf's arguments; {ws} {model} {data} are filled in
    message: list[str]                    # every piece must be in the output
    code: int = 2
    files: dict = field(default_factory=dict)   # relative path -> str | bytes | callable(ws) written first
    own_data: bool = False                # copy the data set into {ws}/data (cases that change it)
    max_output: int = 4000                # a message quotes at most ~200 characters of any input


BASE_SPEC = {
    "name": "h",
    "model": "{model}",
    "data": {"dir": "{data}", "train": "telecom_train_100", "predict": [DATA]},
    "template": "default",
    "train": {"lora_rank": 4, "num_train_epochs": 1.0},
}


def spec_text(changes: dict | None = None, drop: tuple = (), cluster: bool = False) -> str:
    """The base spec with ``changes`` merged in (one level deep for mappings), as YAML."""
    spec = json.loads(json.dumps(BASE_SPEC))
    if cluster:
        spec["cluster"] = "local-test"
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    for key in drop:
        spec.pop(key, None)
    return yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)


def render_case(id: str, changes: dict | None, message, drop=(), cluster=False, own_data=False, code=2,
                extra_files=None, text: str | None = None, args=()) -> Case:
    files = {"s.yaml": text if text is not None else spec_text(changes, drop, cluster), **(extra_files or {})}
    return Case(id, ["render", "{ws}/s.yaml", "--out", "{ws}/runs", *args],
                [message] if isinstance(message, str) else message, code, files, own_data)


def register_names(*names: str):
    """Data sets with hostile names registered in {ws}/data's dataset_info.json."""
    def write(ws: Path, _data: Path) -> None:
        info_path = ws / "data" / "dataset_info.json"
        info = json.loads(info_path.read_text(encoding="utf-8"))
        for name in names:
            info[name] = {"file_name": f"{DATA}.json", "columns": info[DATA]["columns"]}
        info_path.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return write


def slurm_case(id: str, overrides: dict, message) -> Case:
    return render_case(f"slurm-{id}", {"slurm": overrides}, message, cluster=True)


# ---------------------------------------------------------------- specs: names, data, models, types

SPEC_CASES = [
    render_case("name-newline", {"name": "a\nb"}, "name: experiment names use letters"),
    render_case("name-dotdot", {"name": ".."}, "name: experiment names use letters"),
    render_case("name-parent", {"name": "../x"}, "name: experiment names use letters"),
    render_case("name-shell", {"name": "$(touch pwned)"}, "name: experiment names use letters"),
    render_case("name-300-bytes", {"name": "x" * 300}, "at most 200"),
    render_case("name-is-report-dir", {"name": "report"}, "would collide with the experiment's own report"),
    render_case("name-is-jobs-json", {"name": "jobs.json"}, "would collide with the experiment's own jobs.json"),
    render_case("name-is-logs", {"name": "logs"}, "would collide with the experiment's own logs"),
    render_case("data-train-list", {"data": {"train": ["a", "b"]}}, "data.train: expected a string data set name"),
    render_case("data-train-int", {"data": {"train": 5}}, "data.train: expected a string data set name"),
    render_case("data-predict-int", {"data": {"predict": [5]}}, "data.predict.0: expected a string data set name"),
    render_case("data-predict-mapping-item", {"data": {"predict": [{"a": 1}]}}, "data.predict.0: expected a string"),
    render_case("data-predict-mapping", {"data": {"predict": {"a": 1}}}, "data.predict: expected a list"),
    render_case("data-predict-twice", {"data": {"predict": [DATA, DATA]}}, "data.predict.1: 'telecom_test_100' is listed twice"),
    render_case("data-predict-parent", {"data": {"dir": "{ws}/data", "predict": ["../evil"]}},
                "data.predict.0: '../evil' is not a plain data set name", own_data=True,
                extra_files={"data": register_names("../evil")}),
    render_case("data-predict-slash", {"data": {"dir": "{ws}/data", "predict": ["sub/x"]}},
                "'sub/x' is not a plain data set name", own_data=True, extra_files={"data": register_names("sub/x")}),
    render_case("data-predict-dot", {"data": {"dir": "{ws}/data", "predict": ["."]}},
                "'.' is not a plain data set name", own_data=True, extra_files={"data": register_names(".")}),
    render_case("data-predict-newline", {"data": {"dir": "{ws}/data", "predict": ["x\n#SBATCH --x"]}},
                "holds a newline", own_data=True, extra_files={"data": register_names("x\n#SBATCH --x")},
                cluster=True),
    render_case("data-train-parent", {"data": {"dir": "{ws}/data", "train": "../../t"}},
                "data.train: '../../t' is not a plain data set name", own_data=True,
                extra_files={"data": register_names("../../t")}),
    render_case("data-predict-300-bytes", {"data": {"dir": "{ws}/data", "predict": ["p" * 300]}},
                "is 300 bytes long", own_data=True, extra_files={"data": register_names("p" * 300)}),
    render_case("data-dir-newline", {"data": {"dir": "/tmp/a\nb"}}, "data.dir: '/tmp/a\\nb' holds a newline"),
    render_case("data-dir-list", {"data": {"dir": ["a"]}}, "data.dir: expected a string directory"),
    render_case("data-not-mapping", {"data": ["a"]}, "data: expected a mapping"),
    render_case("data-info-is-list", {"data": {"dir": "{ws}/data"}}, "expected a JSON object of data set entries",
                own_data=True, extra_files={"data/dataset_info.json": "[1, 2]"}),
    render_case("data-info-deep", {"data": {"dir": "{ws}/data"}}, "not valid JSON", own_data=True,
                extra_files={"data/dataset_info.json": "[" * 100_000 + "]" * 100_000}),
    render_case("data-info-entry-string", {"data": {"dir": "{ws}/data", "predict": ["odd"]}},
                "entry 'odd': expected a data set object", own_data=True,
                extra_files={"data/dataset_info.json": lambda ws, _: _add_entry(ws, "odd", "just text")}),
    render_case("data-info-file-name-newline", {"data": {"dir": "{ws}/data", "predict": ["odd"]}},
                "file_name: 'x\\ny.json' holds a newline", own_data=True,
                extra_files={"data/dataset_info.json": lambda ws, _: _add_entry(ws, "odd", {"file_name": "x\ny.json"})}),
    render_case("model-newline", {"model": "/tmp/m\nx"}, "model: '/tmp/m\\nx' holds a newline"),
    render_case("model-int", {"model": 5}, "model: expected a model path"),
    render_case("model-list", {"model": ["a"]}, "model: expected a model path"),
    render_case("model-missing", {"model": "{ws}/nope"}, "does not exist"),
    render_case("models-name-slash", {"models": {"a/b": "{model}"}}, "model names use letters", drop=("model",)),
    render_case("models-name-dotdot", {"models": {"..": "{model}"}}, "model names use letters", drop=("model",)),
    render_case("models-path-newline", {"models": {"m": "/x\n/y"}}, "models.m: '/x\\n/y' holds a newline",
                drop=("model",)),
    render_case("models-path-int", {"models": {"m": 7}}, "models.m: expected a string model path", drop=("model",)),
    render_case("template-list", {"template": ["default"]}, "template: required"),
    render_case("template-unknown", {"template": "default\n"}, "unknown template"),
    render_case("prompt-list", {"prompt": ["blog"]}, "prompt: expected one of"),
    render_case("seed-bool", {"seed": True}, "seed: expected a whole number"),
    render_case("seed-string", {"seed": "42"}, "seed: expected a whole number"),
    render_case("seed-negative", {"seed": -1}, "seed: -1 is out of range"),
    render_case("seed-huge", {"seed": 2**40}, "seed: 1099511627776 is out of range"),
    render_case("speed-unknown", {"speed": "ludicrous"}, "speed: expected one of"),
    render_case("micro-batch-bool", {"speed": "fast", "micro_batch": True}, "micro_batch: expected a whole number"),
    render_case("micro-batch-huge", {"speed": "fast", "micro_batch": 10**12}, "micro_batch: 1000000000000 is out of range"),
    render_case("micro-batch-not-dividing", {"speed": "fast", "micro_batch": 3}, "does not divide the effective batch"),
    render_case("dora-kernel-list", {"dora_kernel": ["fast"]}, "dora_kernel: expected one of"),
    render_case("baseline-list", {"baseline": ["upstream"]}, "baseline: expected 'upstream'"),
    render_case("decoding-mapping", {"decoding": {"a": 1}}, "decoding: expected 'greedy'"),
    render_case("description-list", {"description": [1]}, "description: expected text"),
    render_case("train-list", {"train": [1, 2]}, "train: expected a mapping"),
    render_case("train-rank-string", {"train": {"lora_rank": "8; rm -rf /"}}, "train.lora_rank"),
    render_case("train-rank-list", {"train": {"lora_rank": [4]}}, "train.lora_rank: expected int"),
    # Ranges LLaMA-Factory does not check: they would fail (or train nothing) only once the job runs.
    render_case("train-rank-negative", {"train": {"lora_rank": -1}},
                "train.lora_rank: expected a finite value in [1, inf), got -1"),
    render_case("train-rank-zero", {"train": {"lora_rank": 0}}, "train.lora_rank: expected a finite value in [1, inf)"),
    render_case("train-dropout-one", {"train": {"lora_dropout": 1.0}},
                "train.lora_dropout: expected a finite value in [0, 1), got 1.0"),
    render_case("train-lr-nan", {"train": {"learning_rate": float("nan")}}, "train.learning_rate: expected a finite value"),
    render_case("train-lr-inf", {"train": {"learning_rate": float("inf")}}, "train.learning_rate: expected a finite value"),
    render_case("train-epochs-zero", {"train": {"num_train_epochs": 0.0}}, "train.num_train_epochs: expected a finite value in (0, inf)"),
    render_case("predict-new-tokens-zero", {"predict": {"max_new_tokens": 0}}, "predict.max_new_tokens: expected a finite value"),
    render_case("sweep-grid-rank-negative", {"sweep": {"grid": {"lora_rank": [8, -8]}}}, "got -8"),
    render_case("train-reserved-output-dir", {"train": {"output_dir": "/etc"}}, "train.output_dir: set by tlf"),
    render_case("train-unknown-key", {"train": {"lora_rnak": 4}}, "train.lora_rnak"),
    render_case("train-target-newline", {"train": {"lora_target": "q_proj\nrm"}}, "train.lora_target: 'q_proj\\nrm' holds a newline"),
    render_case("train-string-nul", {"train": {"lr_scheduler_type": "cosine\x00"}}, "holds a NUL"),
    render_case("train-string-cr", {"train": {"optim": "adamw_torch\r"}}, "holds a carriage return"),
    render_case("predict-not-mapping", {"predict": 5}, "predict: expected a mapping"),
    render_case("predict-without-generate", {"predict": {"predict_with_generate": False}}, "predict_with_generate"),
    render_case("predict-value-newline", {"predict": {"max_new_tokens": 8, "template_x": "a\nb"}}, "holds a newline"),
    render_case("fp16-and-bf16", {"train": {"fp16": True, "bf16": True}}, "fp16 and bf16 are both true"),
    render_case("top-level-unknown", {"nosuch": 1}, "nosuch: unknown key"),
    render_case("cluster-parent", {"cluster": "../x"}, "cluster profile name '../x'"),
    render_case("cluster-list", {"cluster": ["dcu"]}, "cluster: expected a profile name"),
    render_case("cluster-newline", {"cluster": "dcu\n"}, "cluster profile name 'dcu\\n'"),
    render_case("labels-list", {"labels": ["h"]}, "labels: expected a mapping of run name -> what the run is"),
    render_case("labels-newline", {"labels": {"h": "blog\nrm -rf ~"}}, "labels.h: 'blog\\nrm -rf ~' holds a newline"),
    render_case("labels-long", {"labels": {"h": "x" * 81}}, "labels.h: a label is at most 80 characters"),
    render_case("labels-int", {"labels": {"h": 5}}, "labels.h: expected a string label"),
    render_case("labels-unknown-run", {"labels": {"../x": "y"}}, "labels.../x: no run is named '../x'; runs: h"),
    render_case("labels-yaml-boolean-key", {"labels": {True: "x"}}, "no run is named 'True'"),
    render_case("select-on-predict-set", {"select": {"on": DATA}}, "select.on: 'telecom_test_100' is a predict set"),
    render_case("select-on-train-set", {"select": {"on": "telecom_train_100"}}, "select.on: 'telecom_train_100' is the train set"),
    render_case("select-on-unregistered", {"select": {"on": "telecom_dev_9"}}, "dataset 'telecom_dev_9' is not registered"),
    render_case("select-on-parent", {"select": {"on": "../x"}}, "select.on: '../x' is not a plain data set name"),
    render_case("select-on-missing", {"select": {"metric": "acc"}}, "select.on: expected a string data set name"),
    render_case("select-on-test-role", {"select": {"on": "telecom_test_100"}, "data": {"predict": ["telecom_train_400"]}},
                "select.on: 'telecom_test_100' is a test set of the split: selection must never see it"),
    render_case("select-overlaps-training", {"select": {"on": "telecom_train_100"}, "data": {"train": "telecom_train_400"}},
                "telecom_train_100 shares 100 question(s) with the train set telecom_train_400"),
    render_case("select-metric-unknown", {"select": {"on": "telecom_dev_200", "metric": "accuracy"}},
                "select.metric: expected one of acc, acc_raw, long_recall"),
    render_case("select-every-zero", {"select": {"on": "telecom_dev_200", "every": 0}}, "select.every: 0 is out of range"),
    render_case("select-every-text", {"select": {"on": "telecom_dev_200", "every": "often"}}, "select.every: expected a whole number"),
    render_case("select-every-too-often", {"select": {"on": "telecom_dev_200", "every": 1},
                                           "train": {"num_train_epochs": 5.0}},
                "select.every: 1 would save 65 checkpoints, each predicted on telecom_dev_200; at most 50"),
    render_case("select-with-save-total-limit", {"select": {"on": "telecom_dev_200"}, "train": {"save_total_limit": 1}},
                "train.save_total_limit: set by select:"),
    render_case("select-without-train", {"select": {"on": "telecom_dev_200"}}, "select: selection picks one of a run's",
                drop=("train",)),
    render_case("select-not-mapping", {"select": "telecom_dev_200"}, "select: expected a mapping with on, metric, every"),
    render_case("select-unknown-key", {"select": {"on": "telecom_dev_200", "evry": 5}}, "select.evry: unknown key"),
    render_case("slurm-without-cluster", {"slurm": {"partition": "debug"}}, "slurm: slurm: overrides keys"),
]


def _add_entry(ws: Path, name: str, entry) -> str:
    info = json.loads((ws / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    info[name] = entry
    return json.dumps(info, ensure_ascii=False)


# ---------------------------------------------------------------- sweeps: types, bounds, run names

SWEEP_CASES = [
    render_case("sweep-list", {"sweep": [1]}, "sweep: expected a mapping"),
    render_case("sweep-tie-list", {"sweep": {"tie": ["lora_alpha"]}}, "sweep.tie: expected a mapping"),
    render_case("sweep-tie-bad-number", {"sweep": {"tie": {"lora_alpha": "1.2.3 * lora_rank"}}}, "expected '<number> * <argument>'"),
    render_case("sweep-tie-injection", {"sweep": {"tie": {"lora_alpha": "2 * lora_rank; rm -rf /"}}}, "expected '<number> * <argument>'"),
    render_case("sweep-tie-newline", {"sweep": {"tie": {"lora_alpha": "2 * lora_rank\n"}}}, "holds a newline"),
    render_case("sweep-tie-mapping", {"sweep": {"tie": {"lora_alpha": {"a": 1}}}}, "expected '<number> * <argument>'"),
    render_case("sweep-tie-unknown-source", {"sweep": {"tie": {"lora_alpha": "2 * lora_rnak"}}}, "ties to unknown argument"),
    render_case("sweep-grid-not-list", {"sweep": {"grid": {"lora_rank": 5}}}, "sweep.grid.lora_rank: expected a non-empty list"),
    render_case("sweep-grid-empty", {"sweep": {"grid": {"lora_rank": []}}}, "expected a non-empty list"),
    render_case("sweep-grid-list", {"sweep": {"grid": [1]}}, "sweep.grid: expected a mapping"),
    render_case("sweep-grid-unknown-key", {"sweep": {"grid": {"nosuch": [1, 2]}}}, "sweep.grid.nosuch"),
    render_case("sweep-grid-bad-value", {"sweep": {"grid": {"lora_rank": [4, "x"]}}}, "sweep.grid.lora_rank.1"),
    render_case("sweep-grid-million", {"sweep": {"grid": {k: list(range(1, 11)) for k in
                ("lora_rank", "lora_alpha", "num_train_epochs", "logging_steps", "save_steps", "warmup_steps")}}},
                ["the experiment would have 1,000,000 runs", "sweep.max_runs = 1,000"]),
    render_case("sweep-grid-over-max-runs", {"sweep": {"grid": {"lora_rank": [1, 2, 3]}, "max_runs": 2}},
                "would have 3 runs, more than sweep.max_runs = 2"),
    render_case("sweep-max-runs-string", {"sweep": {"grid": {"lora_rank": [1]}, "max_runs": "many"}},
                "sweep.max_runs: expected a whole number"),
    render_case("sweep-max-runs-zero", {"sweep": {"grid": {"lora_rank": [1]}, "max_runs": 0}},
                "sweep.max_runs: 0 is out of range"),
    render_case("sweep-vary-huge", {"sweep": {"vary": {"lora_rank": list(range(1, 2000))}}},
                "would have 2,000 runs"),
    render_case("sweep-run-name-dotdot", {"sweep": {"grid": {"lora_target": [".."]}}}, "'..' is not a plain run name"),
    render_case("sweep-run-name-dot", {"sweep": {"grid": {"lora_target": ["."]}}}, "'.' is not a plain run name"),
    render_case("sweep-value-newline", {"sweep": {"grid": {"lora_target": ["q_proj\nx"]}}}, "sweep.grid.lora_target.0: 'q_proj\\nx' holds a newline"),
    render_case("sweep-zip-mapping", {"sweep": {"zip": {"lora_rank": [1]}}}, "sweep.zip: expected a list of groups"),
    render_case("sweep-zip-list-item", {"sweep": {"zip": [[1]]}}, "sweep.zip.0: expected a mapping"),
    render_case("sweep-zip-unequal", {"sweep": {"zip": [{"lora_rank": [1, 2], "lora_alpha": [1]}]}}, "the same length"),
    render_case("sweep-zip-not-lists", {"sweep": {"zip": [{"lora_rank": 1}]}}, "the same length"),
    render_case("sweep-vary-not-list", {"sweep": {"vary": {"lora_rank": "8"}}}, "sweep.vary.lora_rank: expected a non-empty list"),
    render_case("sweep-repeated-point", {"sweep": {"grid": {"lora_rank": [4, 4]}}}, "two runs are both named 'r4'"),
    render_case("sweep-tied-and-swept", {"sweep": {"grid": {"lora_alpha": [1]}, "tie": {"lora_alpha": "2 * lora_rank"}}},
                "is both swept and tied"),
    render_case("sweep-without-train", {"sweep": {"grid": {"lora_rank": [1]}}}, "a sweep varies training arguments",
                drop=("train",)),
    render_case("sweep-unknown-key", {"sweep": {"grdi": {"lora_rank": [1]}}}, "sweep.grdi: unknown key"),
]

# ---------------------------------------------------------------- the YAML itself

DEEP = "a: " + "[" * 50_000 + "]" * 50_000 + "\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))
YAML_CASES = [
    render_case("yaml-duplicate-key", None, "s.yaml:3: name is given twice (first at line 1)",
                text="name: a\nmodel: x\nname: b\n"),
    render_case("yaml-alias-bomb", None, "more than 100000 YAML nodes", text=BOMB),
    render_case("yaml-deep", None, "nested too deeply", text=DEEP),
    render_case("yaml-broken", None, "s.yaml:2: invalid YAML", text="name: a\n  - b: [\n"),
    render_case("yaml-list", None, "a spec is a YAML mapping of keys, got list", text="- a\n- b\n"),
    render_case("yaml-empty", None, "a spec is a YAML mapping of keys, got NoneType", text=""),
    render_case("yaml-not-utf8", None, "not UTF-8", text=b"name: \xff\xfe\n"),
    render_case("yaml-huge-list", None, "more than 100000 YAML nodes",
                text="description: [" + ", ".join(["1"] * 120_000) + "]\n"),
    Case("spec-missing", ["render", "{ws}/nope.yaml", "--out", "{ws}/runs"], ["cannot read spec"]),
    Case("spec-is-directory", ["render", "{ws}", "--out", "{ws}/runs"], ["is a directory"]),
    Case("spec-path-newline", ["render", "{ws}/a\nb/s.yaml", "--out", "{ws}/runs"], ["the spec's path", "holds a newline"],
         files={"a\nb/s.yaml": spec_text()}),
    Case("spec-path-cr", ["render", "{ws}/s\r.yaml", "--out", "{ws}/runs"], ["holds a carriage return"],
         files={"s\r.yaml": spec_text()}),
]

# ---------------------------------------------------------------- the command line around a spec

CLI_CASES = [
    render_case("set-no-equals", {}, "--set 'model': expected KEY=VALUE", args=("--set", "model")),
    render_case("set-empty-key", {}, "expected KEY=VALUE", args=("--set", "=x")),
    render_case("set-empty-segment", {}, "KEY is dotted names", args=("--set", "train..lora_rank=4")),
    render_case("set-bad-yaml", {}, "value is not valid YAML", args=("--set", "train.lora_rank=[")),
    render_case("set-train-int", {}, "train: expected a mapping", args=("--set", "train=5")),
    render_case("set-model-newline", {}, "holds a newline", args=("--set", 'model="/x\\ny"')),
    render_case("set-name-parent", {}, "experiment names use letters", args=("--set", "name=../x")),
    render_case("set-key-newline", {}, "KEY is dotted names", args=("--set", "train.lora_rank\n=4")),
    Case("out-newline", ["render", "{ws}/s.yaml", "--out", "{ws}/r\nuns"], ["--out", "holds a newline"],
         files={"s.yaml": spec_text()}),
    Case("out-tab", ["render", "{ws}/s.yaml", "--out", "{ws}/r\tuns"], ["--out", "holds a tab"],
         files={"s.yaml": spec_text()}),
    Case("out-with-space-on-slurm", ["render", "{ws}/s.yaml", "--out", "{ws}/my runs"], ["must not contain spaces"],
         files={"s.yaml": spec_text(cluster=True)}),
    Case("out-with-shell-on-slurm", ["render", "{ws}/s.yaml", "--out", "{ws}/$(touch pwned)"],
         ["must not contain spaces, quotes or shell characters"], files={"s.yaml": spec_text(cluster=True)}),
    Case("out-is-a-file", ["render", "{ws}/s.yaml", "--out", "{ws}/s.yaml"], ["is a file"], code=2,
         files={"s.yaml": spec_text()}),
    Case("experiment-dir-symlink", ["render", "{ws}/s.yaml", "--out", "{ws}/runs"], ["is a symbolic link"],
         files={"s.yaml": spec_text(), "elsewhere/.keep": "", "runs/h": lambda ws, _: _link(ws / "runs" / "h", ws / "elsewhere")}),
    Case("run-dir-symlink", ["render", "{ws}/s.yaml", "--out", "{ws}/runs"], ["is a symbolic link"],
         files={"s.yaml": spec_text(), "elsewhere/.keep": "", "runs/h/h": lambda ws, _: _link(ws / "runs/h/h", ws / "elsewhere")}),
    Case("rendered-file-links-out", ["render", "{ws}/s.yaml", "--out", "{ws}/runs"], ["lies outside"],
         files={"s.yaml": spec_text(), "victim.txt": "keep me",
                "runs/h/h/train.yaml": lambda ws, _: _link(ws / "runs/h/h/train.yaml", ws / "victim.txt")}),
    Case("second-spec-same-name", ["render", "{ws}/other.yaml", "--out", "{ws}/runs"],
         ["already holds experiment 'h' rendered from", "s.yaml", "--force"],
         files={"s.yaml": spec_text(), "other.yaml": spec_text(),
                "runs": lambda ws, _: _render(ws / "s.yaml", ws / "runs")}),
    Case("unknown-only", ["run", "{ws}/s.yaml", "--out", "{ws}/runs", "--only", "../x"], ["--only '../x': no such run"],
         files={"s.yaml": spec_text()}),
    Case("diff-unknown-run", ["diff", "{ws}/s.yaml", "--run", "x\ny"], ["no run named 'x\\ny'"],
         files={"s.yaml": spec_text()}),
    Case("submit-without-cluster", ["submit", "{ws}/s.yaml", "--out", "{ws}/runs"], ["needs a cluster profile"],
         files={"s.yaml": spec_text()}),
]


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _render(spec: Path, out: Path) -> None:
    result = CliRunner().invoke(main, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- cluster profiles and slurm: overrides

SLURM_CASES = [
    slurm_case("partition-trailing-newline", {"partition": "debug\n"}, "slurm.partition: 'debug\\n' has characters"),
    slurm_case("time-cr", {"time": "00:20:00\r"}, "slurm.time: '00:20:00\\r' has characters"),
    slurm_case("gres-newline-sbatch", {"gres": "dcu\n#SBATCH --uid=0"}, "slurm.gres"),
    slurm_case("partition-list", {"partition": ["debug"]}, "slurm.partition: ['debug'] has characters"),
    slurm_case("partition-bool", {"partition": True}, "slurm.partition: True has characters"),
    slurm_case("account-space", {"account": "a b"}, "slurm.account: 'a b' has characters"),
    slurm_case("mem-shell", {"mem": "$(id)"}, "slurm.mem"),
    slurm_case("constraint-quote", {"constraint": "a'b"}, "slurm.constraint"),
    slurm_case("requeue-string-false", {"requeue": "false"}, "slurm.requeue: expected true or false, got 'false'"),
    slurm_case("requeue-int", {"requeue": 0}, "slurm.requeue: expected true or false, got 0"),
    slurm_case("emulate-devices-string", {"emulate_devices": "no"}, "slurm.emulate_devices: expected true or false"),
    slurm_case("gpus-billion", {"gpus_per_node": 1_000_000_000}, "slurm.gpus_per_node: 1000000000 is out of range"),
    slurm_case("gpus-negative", {"gpus_per_node": -1}, "slurm.gpus_per_node: -1 is out of range"),
    slurm_case("gpus-string", {"gpus_per_node": "4"}, "slurm.gpus_per_node: expected a whole number"),
    slurm_case("gpus-bool", {"gpus_per_node": True}, "slurm.gpus_per_node: expected a whole number"),
    slurm_case("nodes-huge", {"nodes": 100_000}, "slurm.nodes: 100000 is out of range"),
    slurm_case("nodes-zero", {"nodes": 0}, "slurm.nodes: 0 is out of range"),
    slurm_case("cpus-huge", {"cpus_per_gpu": 10**9}, "slurm.cpus_per_gpu"),
    slurm_case("array-parallel-zero", {"array_parallel": 0}, "slurm.array_parallel: 0 is out of range"),
    slurm_case("signal-huge", {"signal_seconds": 10**9}, "slurm.signal_seconds"),
    slurm_case("gpu-memory-inf", {"gpu_memory_gb": float("inf")}, "slurm.gpu_memory_gb: expected a number of GB"),
    slurm_case("gpu-memory-nan", {"gpu_memory_gb": float("nan")}, "slurm.gpu_memory_gb: expected a number of GB"),
    slurm_case("gpu-memory-huge", {"gpu_memory_gb": 1e12}, "slurm.gpu_memory_gb: 1000000000000.0 is out of range"),
    slurm_case("gpu-memory-zero", {"gpu_memory_gb": 0}, "slurm.gpu_memory_gb: 0 is out of range"),
    slurm_case("precision-fp8", {"precision": "fp8"}, "slurm.precision: expected fp16, bf16 or null"),
    slurm_case("env-nul", {"env": {"X": "a\x00b"}}, "slurm.env: 'a\\x00b' holds a NUL"),
    slurm_case("env-newline", {"env": {"X": "a\nb"}}, "slurm.env: 'a\\nb' holds a newline"),
    slurm_case("env-key-space", {"env": {"A B": "x"}}, "slurm.env: 'A B' is not an environment variable name"),
    slurm_case("env-key-digit", {"env": {"1X": "x"}}, "'1X' is not an environment variable name"),
    slurm_case("env-key-injection", {"env": {"X=1; rm -rf ~; Y": "x"}}, "is not an environment variable name"),
    slurm_case("env-value-list", {"env": {"X": [1]}}, "slurm.env: X: expected a text or number value"),
    slurm_case("env-value-null", {"env": {"X": None}}, "slurm.env: X: expected a text or number value"),
    slurm_case("env-list", {"env": ["X=1"]}, "slurm.env: expected a mapping"),
    slurm_case("setup-string", {"setup": "source env.sh"}, "slurm.setup: expected a list"),
    slurm_case("setup-newline", {"setup": ["source a.sh\nrm -rf ~"]}, "slurm.setup: 'source a.sh\\nrm -rf ~' holds a newline"),
    slurm_case("setup-int", {"setup": [5]}, "slurm.setup: expected a string list entry, got int"),
    slurm_case("setup-mapping", {"setup": [{"a": 1}]}, "slurm.setup: expected a string list entry, got dict"),
    slurm_case("extra-sbatch-cr", {"extra_sbatch": ["--exclusive\r"]}, "holds a carriage return"),
    slurm_case("extra-sbatch-not-option", {"extra_sbatch": ["exclusive"]}, "must be one '--option[=value]'"),
    slurm_case("extra-sbatch-string", {"extra_sbatch": "--exclusive"}, "slurm.extra_sbatch: expected a list"),
    slurm_case("python-newline", {"python": "/usr/bin/python3\nrm -rf ~"}, "slurm.python: '/usr/bin/python3\\nrm -rf ~' holds a newline"),
    slurm_case("python-int", {"python": 3}, "slurm.python: expected a string path"),
    slurm_case("visible-devices-injection", {"visible_devices_var": "X;Y"}, "not an environment variable name"),
    slurm_case("unknown-key", {"partiton": "debug"}, "slurm.partiton: unknown key"),
    render_case("profile-broken-yaml", {"cluster": "broken"}, "broken.yaml:3: invalid YAML",
                extra_files={"slurm/profiles/broken.yaml": "gres: dcu\npartition: [a\n"}),
    render_case("profile-list", {"cluster": "listy"}, "listy.yaml: a cluster profile is a YAML mapping",
                extra_files={"slurm/profiles/listy.yaml": "- a\n"}),
    render_case("profile-unknown-key", {"cluster": "odd"}, "odd.yaml: unknown profile key(s) ['partiton']",
                extra_files={"slurm/profiles/odd.yaml": "partiton: a\n"}),
    render_case("profile-requeue-string", {"cluster": "odd"}, "odd.yaml: requeue: expected true or false",
                extra_files={"slurm/profiles/odd.yaml": "requeue: 'false'\n"}),
    render_case("profile-not-utf8", {"cluster": "odd"}, "odd.yaml: not UTF-8",
                extra_files={"slurm/profiles/odd.yaml": b"partition: \xff\n"}),
    render_case("profile-duplicate", {"cluster": "odd"}, "odd.yaml:2: gres is given twice",
                extra_files={"slurm/profiles/odd.yaml": "gres: a\ngres: b\n"}),
]

# ---------------------------------------------------------------- data: synth, import, split, check, register

ROWS = "用户问题,答案\n你好,取消方式_1\n再见,取消方式_2\n"
MANIFEST = {"tool": "tlf", "splits": {"t1": {"file": "t1.json", "role": "train", "rows": 0, "class_counts": {}}}}


def _manifest(**split) -> str:
    return json.dumps({"splits": {"t1": {"file": "t1.json", "role": "train", **split}}})


DATA_CASES = [
    Case("synth-unknown-suffix", ["data", "synth", "--out", "{ws}/x.txt", "--rows", "5"], ["unsupported output type '.txt'"]),
    Case("synth-existing", ["data", "synth", "--out", "{ws}/x.csv", "--rows", "5"], ["exists; pass --force"],
         files={"x.csv": "keep"}),
    Case("synth-billion-rows", ["data", "synth", "--out", "{ws}/x.csv", "--rows", "1000000000"], ["--rows"]),
    Case("synth-out-is-directory", ["data", "synth", "--out", "{ws}/d", "--rows", "5"], ["is a directory"],
         files={"d/.keep": ""}),
    Case("import-empty-csv", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["raw.csv: empty file"],
         files={"raw.csv": ""}),
    Case("import-header-only", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["raw.csv: no data rows"],
         files={"raw.csv": "用户问题,答案\n"}),
    Case("import-missing-column", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["missing column(s) ['用户问题']"],
         files={"raw.csv": "问题,答案\n你好,a_1\n"}),
    Case("import-ragged-csv", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["raw.csv: not a readable CSV"],
         files={"raw.csv": '用户问题,答案\n"a,b\n'}),
    Case("import-binary", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["raw.csv"],
         files={"raw.csv": b"\xff\xfe\xfa\x00\x81\x30\x81" * 20}),
    Case("import-xlsx-is-text", ["data", "import", "{ws}/raw.xlsx", "--out", "{ws}/out"], ["raw.xlsx: not a readable .xlsx workbook"],
         files={"raw.xlsx": ROWS}),
    Case("import-jsonl-list-line", ["data", "import", "{ws}/raw.jsonl", "--out", "{ws}/out"],
         ["raw.jsonl: line 2: expected a JSON object of columns, got list"],
         files={"raw.jsonl": '{"用户问题": "a", "答案": "b_1"}\n[1, 2]\n'}),
    Case("import-jsonl-number-line", ["data", "import", "{ws}/raw.jsonl", "--out", "{ws}/out"],
         ["line 1: expected a JSON object of columns, got int"], files={"raw.jsonl": "5\n"}),
    Case("import-jsonl-null-line", ["data", "import", "{ws}/raw.jsonl", "--out", "{ws}/out"],
         ["line 1: expected a JSON object of columns, got NoneType"], files={"raw.jsonl": "null\n"}),
    Case("import-jsonl-broken", ["data", "import", "{ws}/raw.jsonl", "--out", "{ws}/out"], ["line 1: invalid JSON"],
         files={"raw.jsonl": "{\n"}),
    Case("import-jsonl-deep", ["data", "import", "{ws}/raw.jsonl", "--out", "{ws}/out"], ["line 1: JSON nested too deeply"],
         files={"raw.jsonl": "[" * 100_000 + "]" * 100_000 + "\n"}),
    Case("import-json-object", ["data", "import", "{ws}/raw.json", "--out", "{ws}/out"], ["expected a JSON list of records, got dict"],
         files={"raw.json": '{"a": 1}'}),
    Case("import-json-numbers", ["data", "import", "{ws}/raw.json", "--out", "{ws}/out"], ["record 1: expected a JSON object"],
         files={"raw.json": "[1, 2]"}),
    Case("import-json-nested-value", ["data", "import", "{ws}/raw.json", "--out", "{ws}/out"],
         ["record 1, column '用户问题': expected text, got a JSON dict"],
         files={"raw.json": '[{"用户问题": {"x": 1}, "答案": "b_1"}]'}),
    Case("import-json-deep", ["data", "import", "{ws}/raw.json", "--out", "{ws}/out"], ["JSON nested too deeply"],
         files={"raw.json": "[" * 100_000 + "]" * 100_000}),
    Case("import-name-parent", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out", "--name", "../x"],
         ["dataset name '../x'"], files={"raw.csv": ROWS}),
    Case("import-name-newline", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out", "--name", "a\nb"],
         ["dataset name 'a\\nb'"], files={"raw.csv": ROWS}),
    Case("import-name-long", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out", "--name", "n" * 300],
         ["is 300 bytes long"], files={"raw.csv": ROWS}),
    Case("import-instruction-without-field", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out", "--instruction", "{0}"],
         ["has no {question} placeholder"], files={"raw.csv": ROWS}),
    Case("import-over-its-input", ["data", "import", "{ws}/raw/telecom_all.json", "--out", "{ws}/raw", "--force"],
         ["telecom_all.json: is one of this command's inputs"],
         files={"raw/telecom_all.json": '[{"用户问题": "a", "答案": "b_1"}]'}),
    Case("import-unknown-encoding", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out", "--encoding", "nosuch"],
         ["cannot decode as nosuch"], files={"raw.csv": ROWS}),
    Case("import-missing-file", ["data", "import", "{ws}/none.csv", "--out", "{ws}/out"], ["none.csv: cannot read raw data: no such file"]),
    Case("import-unknown-suffix", ["data", "import", "{ws}/raw.txt", "--out", "{ws}/out"], ["unsupported file type '.txt'"],
         files={"raw.txt": ROWS}),
    Case("import-empty-question", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/out"], ["line 2, column '用户问题': empty question"],
         files={"raw.csv": "用户问题,答案\n ,a_1\n"}),
    Case("split-missing", ["data", "split", "{ws}/none.json", "--out", "{ws}/out"], ["none.json: cannot read Alpaca JSON: no such file"]),
    Case("split-not-json", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"], ["a.json: line 1: invalid JSON"],
         files={"a.json": "{"}),
    Case("split-not-records", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"], ["expected a list of records"],
         files={"a.json": "[1]"}),
    Case("split-output-not-string", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"], ["'instruction' and 'output' strings"],
         files={"a.json": '[{"instruction": "q", "output": 5}]'}),
    Case("split-meta-broken", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"], ["a.meta.json: line 1: invalid JSON"],
         files={"a.json": '[{"instruction": "q", "input": "", "output": "a_1"}]', "a.meta.json": "{"}),
    Case("split-meta-categories-int", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"],
         ["a.meta.json: categories: expected a list of class names"],
         files={"a.json": '[{"instruction": "q", "input": "", "output": "a_1"}]', "a.meta.json": '{"categories": 5}'}),
    Case("split-meta-is-list", ["data", "split", "{ws}/a.json", "--out", "{ws}/out"], ["a.meta.json: expected the JSON object"],
         files={"a.json": '[{"instruction": "q", "input": "", "output": "a_1"}]', "a.meta.json": "[]"}),
    Case("split-prefix-parent", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--prefix", "../x"],
         ["dataset name '../x_test_100'"]),
    Case("split-prefix-newline", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--prefix", "a\nb"],
         ["dataset name 'a\\nb_test_100'"]),
    Case("split-prefix-long", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--prefix", "p" * 250],
         ["bytes long"]),
    Case("split-too-large", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--train-sizes", "10000000"],
         ["asks for 10000000 rows"]),
    Case("split-negative-size", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--train-sizes", "-5"],
         ["size must be at least 1"]),
    Case("split-sizes-text", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/out", "--train-sizes", "a,b"],
         ["--train-sizes 'a,b': expected comma-separated integers"]),
    Case("split-out-is-file", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/f"],
         ["--out", "is a file"], files={"f": "x"}),
    Case("split-register-into-broken", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/new",
                                        "--register-into", "{ws}/info.json"], ["info.json: not valid JSON"],
         files={"info.json": "{"}),
    Case("split-register-into-list", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/new",
                                      "--register-into", "{ws}/info.json"], ["expected a JSON object of dataset entries"],
         files={"info.json": "[]"}),
    Case("split-register-into-directory", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/new",
                                           "--register-into", "{ws}/d"], ["'--register-into': File", "is a directory"], files={"d/.keep": ""}),
    Case("split-register-into-its-input", ["data", "split", "{ws}/d/telecom_all.json", "--out", "{ws}/new",
                                           "--register-into", "{ws}/d/telecom_all.json"], ["is one of this command's inputs"],
         files={"d/telecom_all.json": lambda ws, data: (data / "telecom_train_all.json").read_text(encoding="utf-8")}),
    Case("split-over-its-input", ["data", "split", "{ws}/d/telecom_test_100.json", "--out", "{ws}/d", "--force"],
         ["telecom_test_100.json: is one of this command's inputs"],
         files={"d/telecom_test_100.json": lambda ws, data: (data / "telecom_train_all.json").read_text(encoding="utf-8")}),
    Case("split-differing-entry", ["data", "split", "{data}/telecom_train_all.json", "--out", "{ws}/new",
                                   "--register-into", "{ws}/info.json"], ["entry 'telecom_test_100' exists and differs"],
         files={"info.json": '{"telecom_test_100": {"file_name": "other.json"}}'}),
    Case("check-no-manifest", ["data", "check", "{ws}"], ["no split manifest"]),
    Case("check-manifest-broken", ["data", "check", "{ws}"], ["split_manifest.json: line 1: invalid JSON"],
         files={"split_manifest.json": "{"}),
    Case("check-manifest-list", ["data", "check", "{ws}"], ["not the split manifest"], files={"split_manifest.json": "[]"}),
    Case("check-manifest-splits-list", ["data", "check", "{ws}"], ["not the split manifest"],
         files={"split_manifest.json": '{"splits": []}'}),
    Case("check-split-file-parent", ["data", "check", "{ws}"], ["splits.t1.file: '../../etc/passwd' is not a plain file name"],
         files={"split_manifest.json": _manifest(file="../../etc/passwd")}),
    Case("check-split-file-int", ["data", "check", "{ws}"], ["splits.t1.file: expected a string file name"],
         files={"split_manifest.json": _manifest(file=5)}),
    Case("check-split-name-parent", ["data", "check", "{ws}"], ["dataset name '../t'"],
         files={"split_manifest.json": json.dumps({"splits": {"../t": {"file": "t.json"}}})}),
    Case("check-split-role", ["data", "check", "{ws}"], ["splits.t1: expected an object with its file and role"],
         files={"split_manifest.json": _manifest(role="both")}),
    Case("check-subset-missing", ["data", "check", "{ws}"], ["t1.json: cannot read subset"],
         files={"split_manifest.json": _manifest()}),
    Case("check-subset-broken", ["data", "check", "{ws}"], ["t1.json: line 1: invalid JSON"],
         files={"split_manifest.json": _manifest(), "t1.json": "["}),
    Case("check-subset-records", ["data", "check", "{ws}"], ["t1.json: expected a list of Alpaca records"],
         files={"split_manifest.json": _manifest(), "t1.json": '[{"instruction": 5}]'}),
    Case("check-class-counts", ["data", "check", "{ws}"], ["splits.t1.class_counts: expected class -> row count"],
         files={"split_manifest.json": _manifest(class_counts={"a": "many"}), "t1.json": "[]"}),
    Case("register-no-manifest", ["data", "register", "{ws}", "--into", "{ws}/info.json"], ["no split manifest"]),
    Case("register-manifest-broken", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["m.json: line 1: invalid JSON"], files={"m.json": "{"}),
    Case("register-manifest-no-splits", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["not the split manifest"], files={"m.json": "{}"}),
    Case("register-split-name-parent", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["dataset name '../x'"], files={"m.json": json.dumps({"splits": {"../x": {"file": "x.json"}}})}),
    Case("register-split-name-newline", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["dataset name 'a\\nb'"], files={"m.json": json.dumps({"splits": {"a\nb": {"file": "x.json"}}})}),
    Case("register-into-broken", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["info.json: not valid JSON", "refusing to touch it"], files={"m.json": _manifest(), "info.json": "{"}),
    Case("register-into-list", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["expected a JSON object of dataset entries"], files={"m.json": _manifest(), "info.json": "[1]"}),
    Case("register-into-deep", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["info.json: not valid JSON (nested too deeply)"], files={"m.json": _manifest(), "info.json": "[" * 100_000 + "]" * 100_000}),
    Case("register-differing-entry", ["data", "register", "{ws}/m.json", "--into", "{ws}/info.json"],
         ["entry 't1' exists and differs", "--force"], files={"m.json": _manifest(), "info.json": '{"t1": {"file_name": "o.json"}}'}),
    Case("register-into-the-manifest", ["data", "register", "{ws}/m.json", "--into", "{ws}/m.json"],
         ["m.json: is one of this command's inputs"], files={"m.json": _manifest()}),
    Case("register-into-a-subset", ["data", "register", "{ws}/m.json", "--into", "{ws}/t1.json"],
         ["t1.json: is one of this command's inputs"], files={"m.json": _manifest(), "t1.json": "{}"}),
    Case("register-into-directory", ["data", "register", "{ws}/m.json", "--into", "{ws}/d"],
         ["'--into': File", "is a directory"], files={"m.json": _manifest(), "d/.keep": ""}),
]

# ---------------------------------------------------------------- scores

SCORE_CASES = [
    Case("score-missing", ["score", "{ws}/p.jsonl"], ["p.jsonl: cannot read"]),
    Case("score-empty", ["score", "{ws}/p.jsonl"], ["no predictions to score (empty file)"], files={"p.jsonl": ""}),
    Case("score-list-line", ["score", "{ws}/p.jsonl"], ["line 1: expected a JSON object, got list"], files={"p.jsonl": "[1, 2]\n"}),
    Case("score-number-line", ["score", "{ws}/p.jsonl"], ["line 1: expected a JSON object, got int"], files={"p.jsonl": "5\n"}),
    Case("score-null-line", ["score", "{ws}/p.jsonl"], ["line 1: expected a JSON object, got NoneType"], files={"p.jsonl": "null\n"}),
    Case("score-nan", ["score", "{ws}/p.jsonl"], ["line 1: not valid JSON"], files={"p.jsonl": '{"predict": NaN, "label": "a"}\n'}),
    Case("score-predict-int", ["score", "{ws}/p.jsonl"], ["'predict' and 'label' must be strings"],
         files={"p.jsonl": '{"predict": 5, "label": "a"}\n'}),
    Case("score-missing-label", ["score", "{ws}/p.jsonl"], ["line 2: missing key(s) ['label']"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n{"predict": "a"}\n'}),
    Case("score-deep", ["score", "{ws}/p.jsonl"], ["line 1: JSON nested too deeply"],
         files={"p.jsonl": "[" * 100_000 + "]" * 100_000 + "\n"}),
    Case("score-huge-row", ["score", "{ws}/p.jsonl"], ["line 1: predict (30,000 characters) x label (30,000)", "--skip-bad"],
         files={"p.jsonl": json.dumps({"predict": "开通流量" * 7500, "label": "取消套餐" * 7500}) + "\n"}),
    Case("score-huge-row-skipped-leaves-none", ["score", "{ws}/p.jsonl", "--skip-bad"], ["no predictions to score (1 bad lines skipped)"],
         files={"p.jsonl": json.dumps({"predict": "开通流量" * 7500, "label": "取消套餐" * 7500}) + "\n"}),
    Case("score-not-utf8", ["score", "{ws}/p.jsonl"], ["line 1: not UTF-8"], files={"p.jsonl": b'{"predict": "\xff"}\n'}),
    Case("score-json-onto-predictions", ["score", "{ws}/p.jsonl", "--json", "{ws}/p.jsonl"], ["is one of this command's inputs"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n'}),
    Case("score-json-into-directory", ["score", "{ws}/p.jsonl", "--json", "{ws}/d"], ["'--json': File", "is a directory"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n', "d/.keep": ""}),
    Case("score-data-broken", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json"], ["m.json: cannot read split manifest"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n', "m.json": "{"}),
    Case("score-data-list", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json"], ["not the split manifest"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n', "m.json": "[]"}),
    Case("score-data-no-split", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json", "--split", "x"], ["no split 'x'"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n', "m.json": _manifest()}),
    Case("score-data-categories-int", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json", "--split", "t1"],
         ["splits.t1.categories: expected a list of class names"],
         files={"p.jsonl": '{"predict": "a", "label": "a"}\n', "m.json": _manifest(categories=5)}),
]

# ---------------------------------------------------------------- what tlf reads back: runs, experiments

RUN_MANIFEST = {"predict_sets": [DATA], "files": {}, "model": {"name": "m", "path": "/m"}, "trains": False}


def _json(value) -> str:
    return json.dumps(value)


STATE_CASES = [
    Case("step-not-a-run", ["step", "{ws}"], ["not a rendered run"]),
    Case("step-manifest-broken", ["step", "{ws}/r"], ["not a rendered run"], files={"r/manifest.json": "{"}),
    Case("step-manifest-sets-parent", ["step", "{ws}/r"], ["predict_sets: '../../x' is not a plain data set name"],
         files={"r/manifest.json": _json({**RUN_MANIFEST, "predict_sets": ["../../x"]})}),
    Case("step-manifest-sets-string", ["step", "{ws}/r"], ["not the manifest tlf writes"],
         files={"r/manifest.json": _json({**RUN_MANIFEST, "predict_sets": "x"})}),
    Case("step-manifest-files-parent", ["step", "{ws}/r"], ["lies outside"],
         files={"r/manifest.json": _json({**RUN_MANIFEST, "files": {"../../etc/passwd": "0"}})}),
    Case("step-unknown", ["step", "{ws}/r", "foo"], ["unknown step 'foo'"], files={"r/manifest.json": _json(RUN_MANIFEST)}),
    Case("step-predict-parent", ["step", "{ws}/r", "predict", "../x"], ["unknown step 'predict ../x'"],
         files={"r/manifest.json": _json(RUN_MANIFEST)}),
    Case("step-predict-without-set", ["step", "{ws}/r", "predict"], ["unknown step 'predict'"],
         files={"r/manifest.json": _json(RUN_MANIFEST)}),
    Case("step-run-dir-symlink", ["step", "{ws}/link"], ["is a symbolic link"],
         files={"r/manifest.json": _json(RUN_MANIFEST), "link": lambda ws, _: _link(ws / "link", ws / "r")}),
    Case("report-not-an-experiment", ["report", "--root", "{ws}"], ["no readable experiment.json"]),
    Case("report-experiment-broken", ["report", "--root", "{ws}"], ["no readable experiment.json"],
         files={"experiment.json": "{"}),
    Case("report-runs-not-list", ["report", "--root", "{ws}"], ["not the experiment record tlf writes"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": [], "runs": {}})}),
    Case("report-run-name-parent", ["report", "--root", "{ws}"], ["runs: '../../x' is not a plain run name"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": [],
                                          "runs": [{"name": "../../x", "varied": {}, "baseline": False}]})}),
    Case("report-run-name-report", ["report", "--root", "{ws}"], ["would collide with the experiment's own report"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": [],
                                          "runs": [{"name": "report", "varied": {}, "baseline": False}]})}),
    Case("report-set-parent", ["report", "--root", "{ws}"], ["predict_sets: '../x' is not a plain data set name"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": ["../x"], "runs": []})}),
    Case("report-run-int-name", ["report", "--root", "{ws}"], ["runs: expected a string run name"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": [],
                                          "runs": [{"name": 5, "varied": {}, "baseline": False}]})}),
    Case("report-varied-list", ["report", "--root", "{ws}"], ["not the experiment record tlf writes"],
         files={"experiment.json": _json({"experiment": "e", "spec": "s", "predict_sets": [],
                                          "runs": [{"name": "r", "varied": [], "baseline": False}]})}),
    Case("report-needs-spec", ["report"], ["give SPEC or --root"]),
    Case("chat-run-parent", ["chat", "{ws}/s.yaml", "--run", "../x", "--out", "{ws}/runs"], ["--run '../x': no such run"],
         files={"s.yaml": spec_text(), "runs": lambda ws, _: _render(ws / "s.yaml", ws / "runs")}),
    Case("export-run-dir-not-run", ["export", "{ws}", "--to", "{ws}/e"], ["not a rendered run"]),
    Case("export-no-target", ["export", "{ws}"], ["Missing option '--to'"]),
    Case("export-to-and-out", ["export", "{ws}", "--to", "{ws}/e", "--out", "{ws}/f"], ["give --to DIR only"]),
    Case("probe-questions-binary", ["probe", "{ws}/s.yaml", "--questions", "{ws}/q.txt", "--out", "{ws}/runs"],
         ["q.txt"], files={"s.yaml": spec_text(drop=("train",)), "q.txt": b"\xff\xfe\x00",
                           "runs": lambda ws, _: _render(ws / "s.yaml", ws / "runs")}),
]

# ---------------------------------------------------------------- #29: what a user owns, special files, tlf's variables

def _fifo(name: str):
    def make(ws: Path, _data: Path) -> None:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(ws / name)
    return make


def _sparse(name: str, size: int):
    """A file of ``size`` bytes that takes no disk (a hole): big-input refusals without writing gigabytes."""
    def make(ws: Path, _data: Path) -> None:
        with open(ws / name, "wb") as handle:
            handle.truncate(size)
    return make


def _zip_bomb(ws: Path, _data: Path) -> None:
    """An .xlsx-named zip whose one part inflates to 300 MiB of zeros (about 300 KB on disk)."""
    import zipfile

    with zipfile.ZipFile(ws / "raw.xlsx", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            block = b"\0" * (1 << 20)
            for _ in range(300):
                part.write(block)


def _trained(ws: Path, _data: Path) -> None:
    """The spec rendered, and its run marked trained (results and weights files) so export gets past resolve."""
    _render(ws / "s.yaml", ws / "runs")
    train = ws / "runs" / "h" / "h" / "train"
    train.mkdir(parents=True, exist_ok=True)
    (train / "train_results.json").write_text("{}")
    (train / "adapter_model.safetensors").write_bytes(b"0")
    (train / "adapter_config.json").write_text("{}")


def _rendered_with_report_link(ws: Path, _data: Path) -> None:
    _render(ws / "s.yaml", ws / "runs")
    (ws / "elsewhere").mkdir()
    (ws / "runs" / "h" / "report").symlink_to(ws / "elsewhere")


PREDICTION = '{"predict": "a", "label": "a"}\n'
RENDERED = {"s.yaml": spec_text(), "runs": lambda ws, _: _render(ws / "s.yaml", ws / "runs")}
TRAINED = {"s.yaml": spec_text(), "runs": _trained}
EXPORT = ["export", "{ws}/s.yaml", "--runs", "{ws}/runs", "--force", "--to"]
TINY = ["model", "tiny", "--force", "--out"]

OWNERSHIP_CASES = [
    Case("tiny-force-over-data-set", [*TINY, "{ws}/data"], ["is a data set directory", "replaces only a model directory"],
         own_data=True),
    Case("tiny-force-over-user-dir", [*TINY, "{ws}/mine"], ["tlf did not write", "nothing was touched"],
         files={"mine/notes.txt": "mine", "mine/sub/x.bin": b"\0\1"}),
    Case("tiny-force-over-cwd", [*TINY, "."], ["the working directory or one above it"], files={"notes.txt": "mine"}),
    Case("tiny-force-over-parent", [*TINY, "{ws}/.."], ["the working directory or one above it"]),
    Case("tiny-force-over-run", [*TINY, "{ws}/runs/h/h"], ["is a run directory"], files=RENDERED),
    Case("tiny-force-over-experiment", [*TINY, "{ws}/runs/h"], ["is an experiment directory"], files=RENDERED),
    Case("tiny-force-over-link", [*TINY, "{ws}/link"], ["is a symbolic link"],
         files={"real/a": "x", "link": lambda ws, _: _link(ws / "link", ws / "real")}),
    Case("demo-base-force-over-data-set", ["model", "demo-base", "--force", "--out", "{ws}/data"],
         ["is a data set directory"], own_data=True),
    Case("demo-base-force-over-cwd", ["model", "demo-base", "--force", "--out", "."],
         ["the working directory or one above it"], files={"notes.txt": "mine"}),
    Case("demo-base-no-force-over-user-dir", ["model", "demo-base", "--out", "{ws}/mine"],
         ["exists and is not empty; pass --force"], files={"mine/a": "x"}),
    Case("demo-base-out-newline", ["model", "demo-base", "--force", "--out", "{ws}/mine\n$(touch pwned)"],
         ["is a directory tlf did not write"], files={"mine\n$(touch pwned)/a": "x"}),
    Case("tiny-no-force-over-user-dir", ["model", "tiny", "--out", "{ws}/mine"], ["exists and is not empty; pass --force"],
         files={"mine/a": "x"}),
    Case("export-force-over-its-run", [*EXPORT, "{ws}/runs/h/h"], ["holds this command's input"], files=TRAINED),
    Case("export-force-over-experiment", [*EXPORT, "{ws}/runs/h"], ["holds this command's input"], files=TRAINED),
    Case("export-force-over-base-model", [*EXPORT, "{model}"], ["holds this command's input"], files=TRAINED),
    Case("export-force-over-user-dir", [*EXPORT, "{ws}/mine"], ["tlf did not write"], files={**TRAINED, "mine/a": "x"}),
    Case("export-force-over-cwd", [*EXPORT, "."], ["the working directory or one above it"], files=TRAINED),
    Case("export-force-over-data-set", [*EXPORT, "{ws}/data"], ["is a data set directory"], files=TRAINED, own_data=True),
    Case("report-dir-foreign", ["report", "--root", "{ws}/runs/h", "--report-dir", "{ws}/mypics"],
         ["holds no report tlf wrote", "pass --force"], files={**RENDERED, "mypics/loss.png": "mine", "mypics/a.png": "x"}),
    Case("report-dir-own-is-link", ["report", "--root", "{ws}/runs/h"], ["is a symbolic link"],
         files={"s.yaml": spec_text(), "runs": _rendered_with_report_link}),
]

OUTPUT_CASES = [
    Case("score-json-dev-null", ["score", "{ws}/p.jsonl", "--json", "/dev/null"], ["--json /dev/null: is a character device"],
         files={"p.jsonl": PREDICTION}),
    Case("score-json-fifo", ["score", "{ws}/p.jsonl", "--json", "{ws}/f"], ["is a FIFO"],
         files={"p.jsonl": PREDICTION, "f": _fifo("f")}),
    Case("score-json-over-dataset-info", ["score", "{ws}/p.jsonl", "--json", "{ws}/data/dataset_info.json"],
         ["is not a score file tlf wrote"], files={"p.jsonl": PREDICTION}, own_data=True),
    Case("score-json-over-user-json", ["score", "{ws}/p.jsonl", "--json", "{ws}/notes.json"],
         ["is not a score file tlf wrote"], files={"p.jsonl": PREDICTION, "notes.json": '{"tool": "mine"}'}),
    Case("score-json-over-its-manifest", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json", "--json", "{ws}/m.json"],
         ["is one of this command's inputs"], files={"p.jsonl": PREDICTION, "m.json": _manifest()}),
    Case("score-json-over-manifest-in-data-dir",
         ["score", "{ws}/p.jsonl", "--data", "{ws}/data", "--json", "{ws}/data/split_manifest.json"],
         ["is one of this command's inputs"], files={"p.jsonl": PREDICTION}, own_data=True),
    Case("score-json-over-against", ["score", "{ws}/p.jsonl", "--against", "{ws}/q.jsonl", "--json", "{ws}/q.jsonl"],
         ["is one of this command's inputs"], files={"p.jsonl": PREDICTION, "q.jsonl": PREDICTION}),
    Case("synth-out-fifo", ["data", "synth", "--rows", "5", "--out", "{ws}/f.csv", "--force"], ["is a FIFO"],
         files={"f.csv": _fifo("f.csv")}),
    Case("import-out-file-fifo", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/o", "--force"], ["is a FIFO"],
         files={"raw.csv": ROWS, "o/telecom_all.json": _fifo("o/telecom_all.json")}),
]

INPUT_CASES = [
    Case("spec-fifo", ["render", "{ws}/s.yaml", "--out", "{ws}/runs"], ["s.yaml: is a FIFO (named pipe)"],
         files={"s.yaml": _fifo("s.yaml")}),
    Case("spec-dev-zero", ["spec", "/dev/zero"], ["/dev/zero: is a character device"]),
    Case("spec-5-mib", ["spec", "{ws}/s.yaml"], ["a spec file may have at most 4194304 bytes"],
         files={"s.yaml": _sparse("s.yaml", 5 << 20)}),
    Case("score-fifo", ["score", "{ws}/p.jsonl"], ["is a FIFO"], files={"p.jsonl": _fifo("p.jsonl")}),
    Case("score-dev-zero", ["score", "/dev/zero"], ["/dev/zero: is a character device"]),
    Case("score-against-fifo", ["score", "{ws}/p.jsonl", "--against", "{ws}/q.jsonl"], ["q.jsonl: is a FIFO"],
         files={"p.jsonl": PREDICTION, "q.jsonl": _fifo("q.jsonl")}),
    Case("score-600-mib", ["score", "{ws}/p.jsonl"], ["a predictions file may have at most"],
         files={"p.jsonl": _sparse("p.jsonl", 600 << 20)}),
    Case("score-data-fifo", ["score", "{ws}/p.jsonl", "--data", "{ws}/m.json"], ["m.json: is a FIFO"],
         files={"p.jsonl": PREDICTION, "m.json": _fifo("m.json")}),
    Case("import-fifo", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/o"], ["raw.csv: is a FIFO"],
         files={"raw.csv": _fifo("raw.csv")}),
    Case("import-char-device", ["data", "import", "/dev/zero", "--out", "{ws}/o"], ["/dev/zero: is a character device"]),
    Case("import-nul-file", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/o"], ["cannot decode as text: a NUL byte at byte 0"],
         files={"raw.csv": b"\0" * 100_000}),
    Case("import-5-mb-header", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/o"], ["missing column(s)", "characters)"],
         files={"raw.csv": "x" * 5_000_000 + "\n1\n"}),
    Case("import-wide-header", ["data", "import", "{ws}/raw.csv", "--out", "{ws}/o"], ["missing column(s)"],
         files={"raw.csv": ",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n"}),
    Case("import-xlsx-zip-bomb", ["data", "import", "{ws}/raw.xlsx", "--out", "{ws}/o"], ["inflate to", "save it as CSV"],
         files={"raw.xlsx": _zip_bomb}),
    Case("import-xlsx-not-zip", ["data", "import", "{ws}/raw.xlsx", "--out", "{ws}/o"], ["raw.xlsx"],
         files={"raw.xlsx": b"PK\3\4" + b"\0" * 100}),
    Case("split-input-fifo", ["data", "split", "{ws}/in.json", "--out", "{ws}/o"], ["in.json: is a FIFO"],
         files={"in.json": _fifo("in.json")}),
    Case("register-into-fifo", ["data", "register", "{data}", "--into", "{ws}/info.json"], ["info.json: is a FIFO"],
         files={"info.json": _fifo("info.json")}),
    Case("probe-questions-fifo", ["probe", "{ws}/s.yaml", "--questions", "{ws}/q.txt", "--out", "{ws}/runs"],
         ["q.txt: is a FIFO"], files={"s.yaml": spec_text(drop=("train",)), "q.txt": _fifo("q.txt"),
                                      "runs": lambda ws, _: _render(ws / "s.yaml", ws / "runs")}),
]

INPUT_CASES += [
    Case("probe-request-fifo", ["probe", "--request", "{ws}/r.json"], ["r.json: is a FIFO"], files={"r.json": _fifo("r.json")}),
    Case("probe-request-not-json", ["probe", "--request", "{ws}/r.json"], ["not a probe request written by tlf probe"],
         files={"r.json": "{" * 5000}),
]

VARIABLE_CASES = [
    slurm_case(f"env-reserved-{key.lower()}", {"env": {key: "x"}}, f"slurm.env: {key} is set by tlf, Slurm or bash")
    for key in ("RUN_DIR", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "TLF_PYTHON", "TLF_ANYTHING", "SHELLOPTS",
                "BASHOPTS", "BASH_ENV", "IFS", "PS4", "MASTER_PORT", "BASH_FUNC_x")
] + [
    slurm_case("extra-sbatch-two-options", {"extra_sbatch": ["--qos=normal --error=/root/.bashrc"]},
               "without spaces (give each option as its own entry)"),
    slurm_case("extra-sbatch-error", {"extra_sbatch": ["--error=/root/.bashrc"]}, "--error is set by tlf"),
    slurm_case("extra-sbatch-output", {"extra_sbatch": ["--output=/tmp/x"]}, "--output is set by tlf"),
    slurm_case("extra-sbatch-array", {"extra_sbatch": ["--array=0-99"]}, "--array is set by tlf"),
    slurm_case("extra-sbatch-dependency", {"extra_sbatch": ["--dependency=afterok:1"]}, "--dependency is set by tlf"),
    slurm_case("extra-sbatch-job-name", {"extra_sbatch": ["--job-name=x"]}, "--job-name is set by tlf"),
    slurm_case("extra-sbatch-time", {"extra_sbatch": ["--time=1"]}, "--time is set by tlf (use time)"),
    slurm_case("extra-sbatch-quoted-space", {"extra_sbatch": ['--comment="a b"']}, "without spaces"),
    render_case("predict-set-help", {"data": {"dir": "{ws}/data", "predict": ["--help"]}}, "begins with '-'",
                own_data=True, extra_files={"data": register_names("--help")}, cluster=True),
    render_case("train-set-dash", {"data": {"dir": "{ws}/data", "train": "-x"}}, "begins with '-'",
                own_data=True, extra_files={"data": register_names("-x")}),
]

CRASH_CASES = [
    render_case("train-rank-1e30", {"train": {"lora_rank": 10**30}}, "train.lora_rank: 10000000000000000000000000000"
                "00 is beyond any setting"),
    render_case("train-lr-1e300", {"train": {"learning_rate": 1e300}}, "train.learning_rate: 1e+300 is beyond any setting"),
    render_case("train-grad-norm-nan", {"train": {"max_grad_norm": float("nan")}}, "train.max_grad_norm: expected a finite"),
    render_case("train-weight-decay-inf", {"train": {"weight_decay": float("-inf")}}, "train.weight_decay: expected a finite"),
    render_case("train-save-steps-huge", {"train": {"save_steps": 10**20}}, "train.save_steps: 100000000000000000000 is beyond"),
    render_case("sweep-value-huge", {"sweep": {"grid": {"lora_dropout": [0.1, 1e200]}}}, "1e+200"),
    render_case("predict-top-k-huge", {"predict": {"top_k": 2**40}}, "predict.top_k: 1099511627776 is beyond"),
    render_case("name-nfd", {"name": "cafe\u0301"}, "experiment names use letters"),
    render_case("data-predict-nfd", {"data": {"dir": "{ws}/data", "predict": ["te\u0301st"]}}, "not in Unicode normal form NFC",
                own_data=True, extra_files={"data": register_names("te\u0301st")}),
    render_case("seed-5000-digits", None, "that many digits", text=spec_text() + "seed: " + "9" * 5000 + "\n"),
    Case("set-5000-digits", ["spec", "{ws}/s.yaml", "--set", "seed=" + "9" * 5000], ["--set", "not valid YAML"],
         files={"s.yaml": spec_text()}),
    Case("spec-path-line-separator", ["render", "{ws}/a\u2028b.yaml", "--out", "{ws}/runs"],
         ["holds a line separator (U+2028)"], files={"a\u2028b.yaml": spec_text()}),
    Case("spec-path-next-line", ["render", "{ws}/a\x85b.yaml", "--out", "{ws}/runs"],
         ["holds a next-line character (U+0085)"], files={"a\x85b.yaml": spec_text()}),
    Case("spec-path-paragraph-separator", ["render", "{ws}/a\u2029b.yaml", "--out", "{ws}/runs"],
         ["holds a paragraph separator"], files={"a\u2029b.yaml": spec_text()}),
    render_case("description-lone-surrogate", None, "lone surrogate",
                text=spec_text() + 'description: "a\\ud800b"\n'),
    Case("score-lone-surrogate", ["score", "{ws}/p.jsonl"], ["line 1: holds a lone surrogate"],
         files={"p.jsonl": '{"predict": "\\ud800x", "label": "a"}\n'}),
    Case("score-lone-surrogate-second-line", ["score", "{ws}/p.jsonl"], ["line 2: holds a lone surrogate", "--skip-bad"],
         files={"p.jsonl": PREDICTION + '{"predict": "a", "label": "\\udfffx"}\n'}),
    Case("synth-200000-rows", ["data", "synth", "--rows", "200000", "--out", "{ws}/x.csv"], ["--rows", "20000"]),
]

ALL_CASES = (SPEC_CASES + SWEEP_CASES + YAML_CASES + CLI_CASES + SLURM_CASES + DATA_CASES + SCORE_CASES + STATE_CASES
             + OWNERSHIP_CASES + OUTPUT_CASES + INPUT_CASES + VARIABLE_CASES + CRASH_CASES)


def test_the_corpus_is_large_and_its_ids_are_unique():
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 150, len(ids)


def _fill(value: str, ws: Path, model: Path, data: Path) -> str:
    return value.replace("{ws}", str(ws)).replace("{model}", str(model)).replace("{data}", str(data))


def _prepare(case: Case, ws: Path, model: Path, data: Path) -> None:
    """Write the case's files. A callable gets (ws, the shared data set) and returns the file's
    content, or None when it made what it needed itself (a link, a rendered experiment)."""
    if case.own_data:
        shutil.copytree(data, ws / "data")
    for relative, content in case.files.items():
        if callable(content):
            content = content(ws, data)
            if content is None:
                continue
        path = ws / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, ws, model, data), encoding="utf-8")


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_hostile_input_is_refused_cleanly_and_writes_nothing(case, tiny_gemma, telecom_dir, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    data = ws / "data" if case.own_data else telecom_dir
    _prepare(case, ws, tiny_gemma, telecom_dir)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # where a bug's traceback would go
    before = snapshot(ws, telecom_dir, tiny_gemma)
    args = [_fill(a, ws, tiny_gemma, data) for a in case.args]
    result = CliRunner().invoke(main, args)
    output = result.output
    assert "Traceback" not in output and "internal error" not in output, output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{output}")
    assert result.exit_code == case.code, output
    for piece in case.message:
        assert _fill(piece, ws, tiny_gemma, data) in output, output
    assert len(output) <= case.max_output, f"{len(output)} characters of output: {output[:500]}"
    assert snapshot(ws, telecom_dir, tiny_gemma) == before, "a refusal wrote or changed files"
    assert not (tmp_path / "cache" / "tlf" / "crashes").exists()


# ---------------------------------------------------------------- rendered scripts run no payload

PAYLOADS = {"DOLLAR": "$(touch pwned-dollar)", "BACKTICK": "`touch pwned-backtick`", "QUOTE": "it's \"quoted\"",
            "SEMICOLON": "a; touch pwned-semicolon", "BACKSLASH": "a\\b\\", "HOME_REF": "$HOME ${HOME}",
            "GLOB": "*", "SPACES": "  two  spaces  "}
RECORDER = """#!/bin/bash
printf '%s\\0' "$@" > "$TLF_RECORD"
for name in {names}; do printf '%s=%s\\0' "$name" "${{!name}}"; done > "$TLF_RECORD.env"
"""


def _recorder(directory: Path, names) -> Path:
    """An interpreter stand-in at a path with spaces and shell syntax: records its argv and env."""
    directory.mkdir(parents=True)
    script = directory / "python $(touch pwned-python) 'x'"
    script.write_text(RECORDER.format(names=" ".join(names)))
    script.chmod(0o755)
    return script


def _read_record(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def test_rendered_scripts_pass_every_value_byte_exact_and_run_no_payload(tiny_gemma, telecom_dir, tmp_path):
    """job.sbatch, array.sbatch and report.sbatch run with bash (srun/scontrol stubs on PATH, an
    interpreter stand-in that records what it got): every hostile value arrives byte for byte,
    and no `$(...)`, backtick or `;` in a value runs."""
    names = sorted(PAYLOADS)
    python = _recorder(tmp_path / "bin dir $(touch pwned-dir)", names)
    spec_dir = tmp_path / "spec dir $(touch pwned-spec) 'q'"
    spec_dir.mkdir()
    spec = spec_dir / "s.yaml"
    spec.write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)},
                               "sweep": {"grid": {"lora_rank": [2, 4]}},
                               "slurm": {"python": str(python), "env": PAYLOADS, "requeue": False}}, cluster=True))
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    root = out / "h"
    record = tmp_path / "record"
    env = {"PATH": f"{tmp_path / 'stubs'}:/usr/bin:/bin", "TLF_RECORD": str(record), "HOME": "/home/nobody",
           "SLURM_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1"}
    (tmp_path / "stubs").mkdir()
    for stub in ("srun", "scontrol", "sbatch"):
        (tmp_path / "stubs" / stub).write_text("#!/bin/bash\necho stub >&2\n")
        (tmp_path / "stubs" / stub).chmod(0o755)
    expected_env = [f"{name}={PAYLOADS[name]}" for name in names]
    for script, args, argv in [
            (root / "r2" / "job.sbatch", [], ["-m", "telecom_lf.cli", "step", "--", str(root / "r2"), "all"]),
            (root / "r4" / "job.sbatch", ["predict", DATA],
             ["-m", "telecom_lf.cli", "step", "--", str(root / "r4"), "predict", DATA]),
            (root / "array.sbatch", [], ["-m", "telecom_lf.cli", "step", "--", str(root / "r4"), "all"]),
            (root / "report.sbatch", [], ["-m", "telecom_lf.cli", "report", "--root", str(root)])]:
        record.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
        assert _read_record(record) == argv, script
        assert _read_record(Path(f"{record}.env")) == expected_env, script
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    for script in [*root.glob("*/job.sbatch"), root / "array.sbatch", root / "report.sbatch", root / "submit.sh"]:
        header = script.read_text().split("set -euo pipefail", 1)[0]
        assert all(line == "" or line.startswith("#") for line in header.splitlines()), script


def test_submit_sh_passes_names_byte_exact_to_sbatch(tiny_gemma, telecom_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)},
                               "name": "h+1.x", "sweep": {"grid": {"lora_rank": [2]}}}, cluster=True))
    result = CliRunner().invoke(main, ["render", str(spec), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "sbatch").write_text('#!/bin/bash\nprintf "%s\\0" "$@" >> "$TLF_RECORD"; printf "\\n" >> "$TLF_RECORD"\n'
                                  'echo 42\n')
    (stubs / "sbatch").chmod(0o755)
    record = tmp_path / "record"
    done = subprocess.run(["bash", str(tmp_path / "runs" / "h+1.x" / "submit.sh")], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": f"{stubs}:/usr/bin:/bin", "TLF_RECORD": str(record)})
    assert done.returncode == 0, done.stderr
    calls = [line.split("\0")[:-1] for line in record.read_bytes().decode().split("\n") if line]
    run = tmp_path / "runs" / "h+1.x" / "r2"
    assert calls[0] == ["--parsable", str(run / "job.sbatch"), "train"]
    assert calls[1][-3:] == [str(run / "job.sbatch"), "predict", DATA]


# ---------------------------------------------------------------- what a write keeps, and all-or-none

def _split(source: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["data", "split", str(source), "--out", str(out), *extra])


def test_registering_writes_through_a_symlink_keeps_mode_and_owner_and_leaves_no_lock(telecom_dir, tmp_path):
    shared = tmp_path / "LLaMA-Factory" / "data"
    shared.mkdir(parents=True)
    real = shared / "dataset_info.json"
    real.write_text('{"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}\n')
    real.chmod(0o664)
    if os.geteuid() == 0:
        os.chown(real, 65534, 65534)
    link = tmp_path / "my_info.json"
    link.symlink_to(real)
    manifest = telecom_dir / "split_manifest.json"
    result = CliRunner().invoke(main, ["data", "register", str(manifest), "--into", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    merged = json.loads(real.read_text())
    assert list(merged)[0] == "alpaca_en_demo" and DATA in merged
    assert real.stat().st_mode & 0o777 == 0o664
    if os.geteuid() == 0:
        assert (real.stat().st_uid, real.stat().st_gid) == (65534, 65534)
    assert sorted(p.name for p in shared.iterdir()) == ["dataset_info.json"]   # no lock file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LLaMA-Factory", "my_info.json"]


def test_a_new_file_gets_the_umask_mode_not_0600(telecom_dir, tmp_path):
    old = os.umask(0o022)
    try:
        result = _split(telecom_dir / "telecom_train_all.json", tmp_path / "out")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes


@pytest.fixture
def small_disk(tmp_path):
    """A 150 KB tmpfs: a split or a rendering does not fit, and must leave nothing behind."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the test needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_leaves_no_partial_split(telecom_dir, small_disk):
    before = snapshot(small_disk)
    result = _split(telecom_dir / "telecom_train_all.json", small_disk / "out")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output, result.output
    assert f"tlf: {small_disk / 'out'}/" in result.output, result.output    # the file that did not fit is named
    assert snapshot(small_disk) == before           # no subset, no manifest, no empty --out, no temp file


def test_a_full_disk_leaves_no_partial_dataset_info_or_subsets_in_an_existing_dir(telecom_dir, small_disk):
    out = small_disk / "out"
    out.mkdir()
    (out / "dataset_info.json").write_text('{"other": {"file_name": "o.json"}}\n')
    before = snapshot(small_disk)
    result = _split(telecom_dir / "telecom_train_all.json", out)
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert snapshot(small_disk) == before


def test_a_full_disk_leaves_no_half_rendered_experiment(tiny_gemma, telecom_dir, small_disk, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)},
                               "sweep": {"grid": {"lora_rank": list(range(1, 41))}}}, cluster=True))
    before = snapshot(small_disk)
    result = CliRunner().invoke(main, ["render", str(spec), "--out", str(small_disk / "runs")])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert snapshot(small_disk) == before


def test_a_second_spec_with_the_same_name_takes_the_directory_over_only_with_force(tiny_gemma, telecom_dir, tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)}}))
    out = str(tmp_path / "runs")
    assert CliRunner().invoke(main, ["render", str(tmp_path / "a.yaml"), "--out", out]).exit_code == 0
    again = CliRunner().invoke(main, ["render", str(tmp_path / "a.yaml"), "--out", out])
    assert again.exit_code == 0 and "0 file(s) written" in again.output
    assert CliRunner().invoke(main, ["render", str(tmp_path / "b.yaml"), "--out", out]).exit_code == 2
    forced = CliRunner().invoke(main, ["render", str(tmp_path / "b.yaml"), "--out", out, "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "runs" / "h" / "experiment.json").read_text())["spec"] == str(tmp_path / "b.yaml")


def test_a_bug_is_one_line_with_the_traceback_saved(tmp_path, monkeypatch):
    """An unexpected exception (a simulated bug: the CSV reader raising ZeroDivisionError) is
    not a traceback on the terminal: one line says it is tlf's bug and where the traceback is."""
    from telecom_lf import data

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated")

    monkeypatch.setattr(data, "read_raw", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "raw.csv").write_text(ROWS)
    result = CliRunner().invoke(main, ["data", "import", str(tmp_path / "raw.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlf: internal error (a bug in tlf, not in your input): "
                                                   "ZeroDivisionError: simulated; the traceback is in ")
    saved = list((tmp_path / "cache" / "tlf" / "crashes").glob("*.txt"))
    assert len(saved) == 1 and "ZeroDivisionError: simulated" in saved[0].read_text()
    assert "Traceback (most recent call last)" in saved[0].read_text()
