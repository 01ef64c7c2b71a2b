"""One spec -> validated LLaMA-Factory configs: the blog's runs, sweeps, comparisons, errors."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_llamafactory, spec_file, tlf_bin

from telecom_lf import data
from telecom_lf import plan as plan_mod

BLOG = REPO / "experiments" / "blog"
FIXTURES = REPO / "tests" / "fixtures"


def tlf(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def blog_data(tmp_path_factory) -> Path:
    """5000 synthetic rows split in blog mode: telecom_train_5000 holds every row."""
    return data.prepare_synthetic(tmp_path_factory.mktemp("blogdata"), mode="blog")


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def render(spec: Path, out: Path, *sets: str, check=True) -> subprocess.CompletedProcess:
    return tlf("render", spec, "--out", out, *[f"--set={s}" for s in sets], check=check)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the blog's runs

# unit unless marked otherwise (conftest: kinds are exclusive)


@pytest.mark.parametrize("name", ["probe", "climb-400", "climb-5000", "tune", "best"])
def test_blog_experiments_render_and_validate(name, blog_data, tiny_gemma, tmp_path):
    result = render(BLOG / f"{name}.yaml", tmp_path / "runs", f"model={tiny_gemma}", f"data.dir={blog_data}")
    assert "run(s)" in result.stdout
    experiment = json.loads(next((tmp_path / "runs").glob("*/experiment.json")).read_text())
    assert experiment["predict_sets"] == ["telecom_train_100", "telecom_test_100"]
    for run in experiment["runs"]:
        run_dir = tmp_path / "runs" / experiment["experiment"] / run["name"]
        for predict in run_dir.glob("predict-*.yaml"):
            config = load_yaml(predict)
            assert config["predict_with_generate"] is True and config["eval_dataset"] in experiment["predict_sets"]
            assert config["template"] == "tlf_blog_default" and config["cutoff_len"] == 1024
            assert config["per_device_eval_batch_size"] == 1 and config["max_samples"] == 150
            assert config["fp16"] is True and "do_sample" not in config  # sampled, as the blog got
        assert (run_dir / "job.sbatch").exists() and (run_dir / "manifest.json").exists()


def _flags(path: Path) -> dict[str, object]:
    """``--flag value`` / ``--switch`` pairs of a shell script shown in the blog."""
    flags: dict[str, object] = {}
    tokens = [t for t in re.split(r"\s+", path.read_text().split("\n", 1)[1]) if t and t != "\\"]
    for index, token in enumerate(tokens):
        if token.startswith("--"):
            following = tokens[index + 1] if index + 1 < len(tokens) else "--"
            flags[token[2:]] = True if following.startswith("--") else following
    return flags


def _same(blog_value, rendered) -> bool:
    if blog_value is True:
        return rendered is True
    try:
        return float(blog_value) == float(rendered)
    except (TypeError, ValueError):
        return str(blog_value) == str(rendered)


def test_every_flag_of_the_blogs_scripts_reaches_the_rendered_yaml(blog_data, tiny_gemma, tmp_path):
    render(BLOG / "climb-400.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}")
    run_dir = tmp_path / "blog-climb-400" / "blog-climb-400"
    train = load_yaml(run_dir / "train.yaml")
    # Positional arguments of sft_single.sh: $1 model, $2 dataset, $3 lora_target, $4 output dir.
    positional = {"lora_target": "q_proj,v_proj,k_proj"}
    for flag, value in _flags(FIXTURES / "blog_sft_single.sh.txt").items():
        expected = positional.get(flag, value)
        assert flag in train, f"sft_single.sh sets --{flag}; the rendered train.yaml does not"
        assert _same(expected, train[flag]), (flag, expected, train[flag])
    predict = load_yaml(run_dir / "predict-telecom_test_100.yaml")
    renames = {"dataset": "eval_dataset"}  # 0.9.5 predicts only from eval_dataset
    skipped = {"model_name_or_path", "adapter_name_or_path", "output_dir", "overwrite_output_dir"}
    for flag, value in _flags(FIXTURES / "blog_predict_single.sh.txt").items():
        if flag in skipped:  # $1/$2/$4: the run's own paths; predict always overwrites its own output
            assert flag in predict
            continue
        key = renames.get(flag, flag)
        assert key in predict, f"predict_single.sh sets --{flag}; the rendered predict YAML does not"
        if flag == "dataset":
            assert predict[key] == "telecom_test_100"
        elif flag == "template":
            assert predict[key] == "tlf_blog_default"  # `default` as 0.6 rendered it
        else:
            assert _same(value, predict[key]), (flag, value, predict[key])


def test_best_configuration_matches_the_blog(blog_data, tiny_gemma, tmp_path):
    render(BLOG / "best.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}")
    train = load_yaml(tmp_path / "blog-best" / "blog-best" / "train.yaml")
    for line in (FIXTURES / "blog_best_config.txt").read_text().splitlines()[1:]:
        key, value = (part.strip() for part in line.split(":", 1))
        expected = value.replace(" ", "") if key == "lora_target" else {"True": True}.get(value, value)
        assert _same(expected, train[key]), (key, expected, train[key])
    baseline = load_yaml(tmp_path / "blog-best" / "upstream-defaults" / "train.yaml")
    assert not {"lora_rank", "lora_alpha", "use_dora", "learning_rate", "num_train_epochs"} & set(baseline)
    assert baseline["fp16"] is True and baseline["template"] == "tlf_blog_default"


def test_tune_sweep_expands_one_factor_at_a_time_with_tied_alpha(blog_data, tiny_gemma, tmp_path):
    render(BLOG / "tune.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}")
    experiment = json.loads((tmp_path / "blog-tune" / "experiment.json").read_text())
    names = [r["name"] for r in experiment["runs"]]
    assert names == ["r128-a256", "r32-a64", "r256-a512", "r128-a256-qv", "r128-a256-qkvo",
                     "r128-a256-norslora", "r128-a256-nodora", "r128-a256-d0", "upstream-defaults"]
    big = load_yaml(tmp_path / "blog-tune" / "r256-a512" / "train.yaml")
    assert big["lora_rank"] == 256 and big["lora_alpha"] == 512 and big["lora_target"] == "q_proj,v_proj,k_proj"


def test_grid_zip_and_names():
    assert plan_mod.run_name({"lora_rank": 256, "lora_alpha": 512, "lora_target": "q_proj,k_proj,v_proj,o_proj",
                              "use_rslora": True, "use_dora": True}) == "r256-a512-qkvo-rslora-dora"
    assert plan_mod.run_name({"learning_rate": 5e-5, "lora_dropout": 0.0}) == "d0-lr5e-05"


def test_rendering_is_byte_identical(blog_data, tiny_gemma, tmp_path):
    args = (f"model={tiny_gemma}", f"data.dir={blog_data}")
    render(BLOG / "tune.yaml", tmp_path / "a", *args)
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    again = render(BLOG / "tune.yaml", tmp_path / "a", *args)
    assert "0 file(s) written" in again.stdout
    assert {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()} == first


def test_dry_run_writes_nothing(blog_data, tiny_gemma, tmp_path):
    result = tlf("render", BLOG / "best.yaml", "--out", tmp_path / "runs", "--dry-run",
                 f"--set=model={tiny_gemma}", f"--set=data.dir={blog_data}")
    assert "train.yaml" in result.stdout and "nothing written" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_model_comparison_maps_lora_target_per_family(blog_data, tiny_gemma, tiny_llama, tmp_path):
    chatglm = tmp_path / "chatglm3"
    chatglm.mkdir()
    (chatglm / "config.json").write_text(json.dumps({"model_type": "chatglm"}))
    baichuan = tmp_path / "baichuan2"
    baichuan.mkdir()
    (baichuan / "config.json").write_text(json.dumps({"model_type": "baichuan"}))
    spec = write_spec(tmp_path / "compare.yaml", f"""
name: compare
models: {{gemma: {tiny_gemma}, llama: {tiny_llama}, chatglm: {chatglm}, baichuan: {baichuan}}}
data: {{dir: {blog_data}, train: telecom_train_400, predict: [telecom_test_100]}}
template: default
train: {{lora_target: "q_proj,k_proj,v_proj,o_proj", lora_rank: 8}}
""")
    render(spec, tmp_path / "runs")
    targets = {name: load_yaml(tmp_path / "runs" / "compare" / f"{name}-compare" / "train.yaml")["lora_target"]
               for name in ("gemma", "llama", "chatglm", "baichuan")}
    assert targets == {"gemma": "q_proj,k_proj,v_proj,o_proj", "llama": "q_proj,k_proj,v_proj,o_proj",
                       "chatglm": "query_key_value,dense", "baichuan": "W_pack,o_proj"}


def test_greedy_by_default_and_sampled_one_setting_away(blog_data, tiny_gemma, tmp_path):
    spec = write_spec(tmp_path / "g.yaml", f"""
model: {tiny_gemma}
data: {{dir: {blog_data}, predict: [telecom_test_100]}}
template: default
""")
    render(spec, tmp_path / "g")
    greedy = load_yaml(next((tmp_path / "g").rglob("predict-telecom_test_100.yaml")))
    assert greedy["do_sample"] is False and greedy["template"] == "default"
    render(spec, tmp_path / "s", "decoding=sampled")
    sampled = load_yaml(next((tmp_path / "s").rglob("predict-telecom_test_100.yaml")))
    assert "do_sample" not in sampled


# ---------------------------------------------------------------- bad specs


BAD_SPECS = {
    "misspelled key": (
        "  lora_traget: q_proj,v_proj\n",
        ["bad.yaml:9: train.lora_traget", "did you mean 'lora_target'"],
    ),
    "string learning rate": (
        "  learning_rate: 5e-5\n",
        ["bad.yaml:9: train.learning_rate", "got str '5e-5'", "5.0e-5"],
    ),
    "bad choice": ("  lr_scheduler_type: cosin\n", ["bad.yaml:9: train.lr_scheduler_type", "did you mean 'cosine'"]),
    "reserved key": ("  output_dir: /tmp/x\n", ["bad.yaml:9: train.output_dir", "set by tlf"]),
    "wrong type": ("  lora_rank: eight\n", ["bad.yaml:9: train.lora_rank", "expected int"]),
    "predict without generation": (
        "predict:\n  predict_with_generate: false\n",
        ["bad.yaml:10: predict.predict_with_generate", "needs predict_with_generate"],
    ),
    "slurm overrides without a cluster": (
        "  lora_rank: 8\nslurm:\n  gpu_memory_gb: 80\n",
        ["bad.yaml:10: slurm", "add cluster:"],
    ),
    "unknown DoRA forward": (
        '  lora_rank: 8\ndora_kernel: "fast\\n$(touch x)"\n',
        ["bad.yaml:10: dora_kernel", "expected one of ['fast', 'peft']"],
    ),
    "unknown spec section key": ("  lora_rank: 8\ndata_dir: x\n", ["bad.yaml:10: data_dir", "unknown key"]),
    "duplicate key": (
        "  lora_rank: 8\n  lora_rank: 2\n",
        ["bad.yaml:10: train.lora_rank is given twice", "first at line 9"],
    ),
    "alias bomb": (
        "  lora_rank: 8\nx0: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"x{i}: &{'abcdefgh'[i]} [*{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}, "
            f"*{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}, "
            f"*{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}, "
            f"*{'abcdefgh'[i - 1]}, *{'abcdefgh'[i - 1]}]\n"
            for i in range(1, 8)
        ),
        ["bad.yaml: more than 100000 YAML nodes"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_names_line_and_key_and_writes_nothing(case, blog_data, tiny_gemma, tmp_path):
    body, expected = BAD_SPECS[case]
    spec = write_spec(tmp_path / "bad.yaml", f"""name: bad
model: {tiny_gemma}
data:
  dir: {blog_data}
  train: telecom_train_400
  predict: [telecom_test_100]
template: default
train:
""" + body)
    result = render(spec, tmp_path / "runs", check=False)
    assert result.returncode == 2, result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not (tmp_path / "runs").exists()


def test_unknown_template_and_dataset_are_refused(blog_data, tiny_gemma, tmp_path):
    spec = write_spec(tmp_path / "t.yaml", f"""model: {tiny_gemma}
data: {{dir: {blog_data}, predict: [telecom_test_100]}}
template: gemmma
""")
    result = render(spec, tmp_path / "runs", check=False)
    assert result.returncode == 2 and "t.yaml:3: template" in result.stderr and "'gemma'" in result.stderr
    spec.write_text(spec.read_text().replace("gemmma", "default").replace("telecom_test_100", "telecom_tset_100"))
    result = render(spec, tmp_path / "runs", check=False)
    assert result.returncode == 2 and "telecom_tset_100" in result.stderr and "telecom_test_100" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_finished_run_is_not_overwritten_without_force(blog_data, tiny_gemma, tmp_path):
    args = (f"model={tiny_gemma}", f"data.dir={blog_data}")
    render(BLOG / "best.yaml", tmp_path, *args)
    run_dir = tmp_path / "blog-best" / "blog-best"
    (run_dir / "train").mkdir()
    (run_dir / "train" / "train_results.json").write_text("{}")
    changed = render(BLOG / "best.yaml", tmp_path, *args, "train.learning_rate=1.0e-4", check=False)
    assert changed.returncode == 2 and "--force" in changed.stderr
    assert load_yaml(run_dir / "train.yaml")["learning_rate"] == 5.0e-5
    tlf("render", BLOG / "best.yaml", "--out", tmp_path, *[f"--set={a}" for a in args],
        "--set=train.learning_rate=1.0e-4", "--force")
    assert load_yaml(run_dir / "train.yaml")["learning_rate"] == 1.0e-4


# ---------------------------------------------------------------- issue 13's observed bugs


def test_dry_run_over_a_finished_run_refuses_as_the_real_render_does(blog_data, tiny_gemma, tmp_path):
    args = (f"model={tiny_gemma}", f"data.dir={blog_data}")
    render(BLOG / "best.yaml", tmp_path, *args)
    run_dir = tmp_path / "blog-best" / "blog-best"
    (run_dir / "train").mkdir()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    real = render(BLOG / "best.yaml", tmp_path, *args, "train.learning_rate=1.0e-4", check=False)
    dry = tlf("render", BLOG / "best.yaml", "--out", tmp_path, "--dry-run", *[f"--set={a}" for a in args],
              "--set=train.learning_rate=1.0e-4", check=False)
    assert real.returncode == dry.returncode == 2, dry.stdout
    assert dry.stderr == real.stderr and "pass --force" in dry.stderr
    assert "write" not in dry.stdout
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_diff_shows_the_output_dir_render_writes(blog_data, tiny_gemma, tmp_path):
    """Both take --out (default ./runs, relative to where they run); diff used the spec's folder."""
    args = [f"--set=model={tiny_gemma}", f"--set=data.dir={blog_data}"]
    tlf("render", BLOG / "climb-400.yaml", *args, cwd=tmp_path)
    rendered = load_yaml(tmp_path / "runs" / "blog-climb-400" / "blog-climb-400" / "train.yaml")["output_dir"]
    shown = tlf("diff", BLOG / "climb-400.yaml", "--all", *args, cwd=tmp_path).stdout
    row = next(line for line in shown.splitlines() if " output_dir " in line)
    assert rendered in row.split() and str(tmp_path / "runs") in rendered


def test_rerun_by_hand_after_the_demo_is_not_refused(tmp_path, tiny_gemma, telecom_dir):
    """experiments/demo.yaml's "rerun by hand" line after `tlf demo`: the demo passed absolute
    --set paths, the user relative ones; the same spec must give the same manifest."""
    demo = REPO / "experiments" / "demo.yaml"
    out = tmp_path / "demo-out"
    shutil.copytree(tiny_gemma, out / "models" / "base")
    shutil.copytree(telecom_dir, out / "data")
    tlf(
        "render",
        demo,
        "--out",
        out / "runs",
        f"--set=model={out / 'models' / 'base'}",
        f"--set=data.dir={out / 'data'}",
    )
    run_dir = out / "runs" / "demo" / "upstream-defaults"
    (run_dir / "train").mkdir()  # the demo ran it
    by_hand = tlf("render", demo, "--set", "model=demo-out/models/base", "--set", "data.dir=demo-out/data",
                  "--out", "demo-out/runs", cwd=tmp_path)
    assert "0 file(s) written" in by_hand.stdout


def test_rendered_yaml_says_where_each_value_came_from(blog_data, tiny_gemma, tmp_path):
    render(BLOG / "climb-400.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}", "speed=fast")
    text = (tmp_path / "blog-climb-400" / "blog-climb-400" / "train.yaml").read_text(encoding="utf-8")
    spec_lines = (BLOG / "climb-400.yaml").read_text(encoding="utf-8").splitlines()
    rank_line = next(i + 1 for i, line in enumerate(spec_lines) if line.strip().startswith("lora_rank:"))
    assert f"lora_rank: 128  # spec climb-400.yaml:{rank_line}\n" in text
    assert "fp16: true  # profile dcu\n" in text
    assert re.search(r"^save_steps: \d+  # tlf default: about ten checkpoints per run$", text, re.M)
    assert "template: tlf_blog_default  # spec climb-400.yaml:" in text
    assert re.search(
        r"^per_device_train_batch_size: \d+  # speed: fast \(was 8: spec climb-400.yaml:\d+\)$", text, re.M
    )
    assert "cutoff_len: 1024  # tlf default: LLaMA-Factory 0.6's cutoff (prompt: blog)" in text
    groups = [line for line in text.splitlines() if line.startswith("# --- ")]
    assert groups[0] == "# --- ModelArguments ---" and len(groups) == len(set(groups)) >= 4
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all("  # " in line for line in body), [line for line in body if "  # " not in line]
    predict = (tmp_path / "blog-climb-400" / "blog-climb-400" / "predict-telecom_test_100.yaml").read_text()
    assert "do_sample: true" not in predict and "adapter_name_or_path:" in predict


def test_blog_mode_predicts_at_most_512_new_tokens_as_llamafactory_0_6_did(blog_data, tiny_gemma, tmp_path):
    args = (f"model={tiny_gemma}", f"data.dir={blog_data}")
    render(BLOG / "climb-400.yaml", tmp_path / "blog", *args)
    blog = (tmp_path / "blog" / "blog-climb-400" / "blog-climb-400" / "predict-telecom_test_100.yaml").read_text()
    assert "max_new_tokens: 512  # tlf default: LLaMA-Factory 0.6's limit (prompt: blog)" in blog
    render(BLOG / "climb-400.yaml", tmp_path / "set", *args, "predict.max_new_tokens=64")
    assert load_yaml(next((tmp_path / "set").rglob("predict-telecom_test_100.yaml")))["max_new_tokens"] == 64
    render(BLOG / "climb-400.yaml", tmp_path / "up", *args, "prompt=upstream")
    assert "max_new_tokens" not in load_yaml(next((tmp_path / "up").rglob("predict-telecom_test_100.yaml")))
    shown = tlf("diff", BLOG / "climb-400.yaml", *[f"--set={a}" for a in args]).stdout
    assert re.search(r"predict\s+max_new_tokens\s+512\s+1024\s+\*", shown), shown


@pytest.mark.parametrize("model,message", [
    ("empty-dir", "model directory {path} has no config.json"),
    ("no/such/dir/here", "model directory {path} does not exist"),
])
def test_a_missing_local_model_is_refused_at_load_with_its_line(blog_data, tmp_path, model, message):
    (tmp_path / "empty-dir").mkdir()
    spec = write_spec(tmp_path / "m.yaml", f"name: m\ntemplate: default\nmodel: {model}\n"
                                           f"data: {{dir: {blog_data}, predict: [telecom_test_100]}}\n")
    result = tlf("render", spec, "--out", tmp_path / "runs", check=False)
    assert result.returncode == 2
    assert "m.yaml:3: model: " + message.format(path=tmp_path / model) in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_hub_id_is_accepted_with_a_note(blog_data, tmp_path):
    spec = write_spec(tmp_path / "hub.yaml", "name: hub\ntemplate: default\nmodel: google/gemma-2b\n"
                                             f"data: {{dir: {blog_data}, predict: [telecom_test_100]}}\n")
    result = tlf("render", spec, "--out", tmp_path / "runs")
    assert "note: model 'google/gemma-2b' is not a directory here: read as a hub id" in result.stderr
    predict = load_yaml(tmp_path / "runs" / "hub" / "gemma-2b-probe" / "predict-telecom_test_100.yaml")
    assert predict["model_name_or_path"] == "google/gemma-2b"


def test_diff_against_upstream_defaults(blog_data, tiny_gemma):
    result = tlf("diff", BLOG / "climb-400.yaml", f"--set=model={tiny_gemma}", f"--set=data.dir={blog_data}")
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[2:] if len(line.split()) > 2}
    assert re.search(r"lora_rank\s+128\s+8\s+\*", rows["lora_rank"])
    assert "lora_alpha" not in rows  # 256 == 2 x 128: LLaMA-Factory's effective default
    assert "learning_rate" not in rows  # 5e-5 is LLaMA-Factory's default too
    assert (
        "lr_scheduler_type" in rows and "cosine" in rows["lr_scheduler_type"] and "linear" in rows["lr_scheduler_type"]
    )
    assert "use_dora" in rows and "cutoff_len" in rows
    best = tlf("diff", BLOG / "best.yaml", "--all", f"--set=model={tiny_gemma}", f"--set=data.dir={blog_data}")
    assert "lora_alpha" in best.stdout and "None -> 512 (2 x lora_rank)" in best.stdout


# ---------------------------------------------------------------- blog-era prompt rendering


def _llmtuner_templates(tmp_path: Path):
    """LLaMA-Factory 0.6.3's own template module, loaded from its wheel (never installed)."""
    wheels = sorted((Path(sys.prefix) / "blog-era").glob("llmtuner-0.6.3-*.whl"))
    assert wheels, "dev.sh setup downloads llmtuner 0.6.3 into .venv/blog-era"
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(tmp_path / "llmtuner")
    root = tmp_path / "llmtuner" / "llmtuner"
    for name, path in (("llmtuner", root), ("llmtuner.data", root / "data"), ("llmtuner.extras", root / "extras")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]  # a namespace: the package __init__ would import all of 0.6
        sys.modules[name] = module
    try:
        return importlib.import_module("llmtuner.data.template")
    finally:
        for name in [n for n in sys.modules if n.startswith("llmtuner")]:
            sys.modules.pop(name)


def test_blog_mode_token_ids_equal_llamafactory_0_6(tiny_gemma, tmp_path):
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    from telecom_lf.compat import register_blog_templates

    v06 = _llmtuner_templates(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma)
    messages = [{"role": "user", "content": "回答中国电信手机用户的问题,9元百度专属定向流量包如何取消,应该怎么做？"},
                {"role": "assistant", "content": "取消方式_68"}]
    old_prompt, old_answer = v06.templates["default"].encode_oneturn(tokenizer, messages)
    assert tokenizer.decode(old_prompt).endswith("\nAssistant: ") and old_answer[-1] == tokenizer.eos_token_id

    register_blog_templates()
    register_blog_templates()  # idempotent: every process may call it
    blog = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="tlf_blog_default"))
    assert blog.encode_oneturn(tokenizer, messages) == (old_prompt, old_answer)
    upstream = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="default"))
    assert upstream.encode_oneturn(tokenizer, messages) != (old_prompt, old_answer)


@pytest.mark.integration
def test_rendered_blog_climb_trains_and_predicts_for_real(blog_data, tiny_gemma, tmp_path):
    """The rendered YAMLs, unchanged, through tlf-lf (llamafactory-cli + the blog template)."""
    render(BLOG / "climb-400.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}",
           "cluster=local-test", "train.num_train_epochs=1.0", "predict.fp16=false", "predict.max_samples=6")
    run_dir = tmp_path / "blog-climb-400" / "blog-climb-400"
    for config in ("train.yaml", "predict-telecom_test_100.yaml"):
        done = subprocess.run([str(Path(sys.executable).parent / "tlf-lf"), "train", str(run_dir / config)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    adapter = json.loads((run_dir / "train" / "adapter_config.json").read_text())
    assert adapter["r"] == 128 and adapter["lora_alpha"] == 256 and adapter["use_dora"] and adapter["use_rslora"]
    rows = [
        json.loads(line)
        for line in (run_dir / "predict-telecom_test_100" / "generated_predictions.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 6
    assert rows[0]["prompt"].endswith("应该怎么做？\nAssistant: ")  # 0.6's rendering: no <eos> before "\nAssistant: "
    assert not rows[0]["label"].endswith("\n")                  # and no "\n" after the answer


@pytest.mark.integration
def test_upstream_mode_yaml_runs_in_plain_llamafactory_cli(telecom_dir, tiny_llama, tmp_path):
    spec = write_spec(tmp_path / "up.yaml", f"""name: up
model: {tiny_llama}
data: {{dir: {telecom_dir}, train: telecom_train_100, predict: [telecom_test_100]}}
template: default
train: {{lora_rank: 4, num_train_epochs: 1.0, cutoff_len: 128}}
predict: {{max_samples: 4, max_new_tokens: 8}}
""")
    render(spec, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "up" / "up"
    run_llamafactory(load_yaml(run_dir / "train.yaml"), tmp_path / "lf", "train")
    run_llamafactory(load_yaml(run_dir / "predict-telecom_test_100.yaml"), tmp_path / "lf", "predict")
    assert (run_dir / "predict-telecom_test_100" / "generated_predictions.jsonl").exists()


def test_fast_speed_profile_keeps_the_effective_batch(blog_data, tiny_gemma, tmp_path):
    render(BLOG / "climb-400.yaml", tmp_path / "plain", f"model={tiny_gemma}", f"data.dir={blog_data}")
    render(BLOG / "climb-400.yaml", tmp_path / "fast", f"model={tiny_gemma}", f"data.dir={blog_data}", "speed=fast",
           "slurm.gpu_memory_gb=80")
    plain = load_yaml(next((tmp_path / "plain").rglob("train.yaml")))
    fast = load_yaml(next((tmp_path / "fast").rglob("train.yaml")))
    assert plain["per_device_train_batch_size"] * plain["gradient_accumulation_steps"] == 64
    assert fast["per_device_train_batch_size"] == 64 and fast["gradient_accumulation_steps"] == 1
    assert fast["flash_attn"] == "sdpa" and fast["tokenized_path"].startswith(str(blog_data))
    same = {k: v for k, v in plain.items() if k not in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                         "output_dir")}
    assert all(fast[k] == v for k, v in same.items())  # every hyper-parameter as written
    plain_predict = load_yaml(next((tmp_path / "plain").rglob("predict-telecom_test_100.yaml")))
    fast_predict = load_yaml(next((tmp_path / "fast").rglob("predict-telecom_test_100.yaml")))
    assert plain_predict["per_device_eval_batch_size"] == 1 and fast_predict["per_device_eval_batch_size"] == 32
    paths = ("per_device_eval_batch_size", "output_dir", "adapter_name_or_path")
    assert {k: v for k, v in fast_predict.items() if k not in paths} == \
        {k: v for k, v in plain_predict.items() if k not in paths}
    bad = render(BLOG / "climb-400.yaml", tmp_path / "bad", f"model={tiny_gemma}", f"data.dir={blog_data}",
                 "speed=turbo", check=False)
    assert bad.returncode == 2 and "speed" in bad.stderr


def test_fast_micro_batch_keeps_the_effective_batch_and_user_keys_win(blog_data, tiny_gemma, tmp_path):
    common = (f"model={tiny_gemma}", f"data.dir={blog_data}", "speed=fast")
    render(BLOG / "climb-400.yaml", tmp_path / "m32", *common, "micro_batch=32", "train.flash_attn=disabled",
           "train.enable_liger_kernel=false")
    fast = load_yaml(next((tmp_path / "m32").rglob("train.yaml")))
    assert (fast["per_device_train_batch_size"], fast["gradient_accumulation_steps"]) == (32, 2)
    assert fast["flash_attn"] == "disabled" and fast["enable_liger_kernel"] is False  # the spec's own choice stays
    bad = render(BLOG / "climb-400.yaml", tmp_path / "m24", *common, "micro_batch=24", check=False)
    assert bad.returncode == 2 and "micro_batch 24 does not divide the effective batch 64" in bad.stderr
    assert not (tmp_path / "m24").exists()
    plain = render(BLOG / "climb-400.yaml", tmp_path / "plain", f"model={tiny_gemma}", f"data.dir={blog_data}",
                   "micro_batch=32", check=False)
    assert plain.returncode == 2 and "micro_batch" in plain.stderr and "speed: fast" in plain.stderr


@pytest.mark.parametrize("card_gb,liger,user,expected", [
    # (micro-batch, Liger) the fast profile picks for the blog's 8 x GA 8 on the card the cluster profile names
    (80, True, {}, (64, None)),      # a big card: no Liger (measured 1.49x slower on an H100)
    (40, True, {}, (64, None)),
    (16, True, {}, (64, True)),      # the blog's DCU: Liger keeps 64 rows in 5.8 GB (17.0 GB without)
    (None, True, {}, (64, True)),    # a card the profile does not size: memory first
    (16, False, {}, (32, None)),     # no Liger installed: half the rows per micro-batch
    (24, False, {}, (64, None)),
    (16, True, {"enable_liger_kernel": False}, (32, False)),   # the spec's own choice stays, and still fits
    (16, False, {"enable_liger_kernel": True}, (64, True)),
    (16, False, {"micro_batch": 16}, (16, None)),
])
def test_fast_profile_sizes_liger_and_micro_batch_by_the_cards_memory(card_gb, liger, user, expected, blog_data,
                                                                       tiny_gemma, tmp_path, monkeypatch):
    from telecom_lf import render as render_mod
    from telecom_lf import spec as spec_mod

    monkeypatch.setattr(render_mod, "liger_installed", lambda: liger)
    sets = [f"model={tiny_gemma}", f"data.dir={blog_data}", "speed=fast",
            f"slurm.gpu_memory_gb={'null' if card_gb is None else card_gb}",
            *(f"{'' if key == 'micro_batch' else 'train.'}{key}={str(value).lower()}" for key, value in user.items())]
    spec = spec_mod.load(BLOG / "climb-400.yaml", sets)
    config = render_mod.train_config(spec, plan_mod.expand(spec)[0], tmp_path).values()
    assert (config["per_device_train_batch_size"], config.get("enable_liger_kernel")) == expected
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 64


def test_blog_mode_predicts_with_the_blog_eras_limits_and_diff_shows_them(blog_data, tiny_gemma, tmp_path):
    """LLaMA-Factory 0.6: at most 512 new tokens, predictions decoded with
    clean_up_tokenization_spaces=True. The first is a key; the second a header line tlf-lf reads."""
    from telecom_lf import compat, rundir

    render(BLOG / "climb-400.yaml", tmp_path, f"model={tiny_gemma}", f"data.dir={blog_data}")
    run_dir = tmp_path / "blog-climb-400" / "blog-climb-400"
    predict = next(run_dir.glob("predict-*.yaml"))
    assert load_yaml(predict)["max_new_tokens"] == 512
    assert rundir.header_marker(str(predict), compat.DECODE_KEY) == "0.6"
    assert rundir.header_marker(str(run_dir / "train.yaml"), compat.DECODE_KEY) is None
    shown = tlf("diff", BLOG / "climb-400.yaml", "--out", tmp_path, f"--set=model={tiny_gemma}",
                f"--set=data.dir={blog_data}").stdout
    assert "clean_up_tokenization_spaces" in shown and re.search(r"max_new_tokens\s+512", shown)


# ---------------------------------------------------------------- seeds: replicas


def test_seeds_replicate_every_run_each_with_its_seed_and_its_references_replica(telecom_dir, tiny_gemma, tmp_path):
    spec = spec_file(tmp_path / "rep.yaml", tiny_gemma, telecom_dir,
                     extra="seeds: [42, 7]\nbaseline: upstream\nsweep:\n  vary: {lora_rank: [8]}\n")
    result = render(spec, tmp_path / "runs")
    assert "6 run(s)" in result.stdout
    experiment = json.loads((tmp_path / "runs" / "rep" / "experiment.json").read_text())
    runs = {r["name"]: r for r in experiment["runs"]}
    assert sorted(runs) == ["r8-s42", "r8-s7", "rep-s42", "rep-s7", "upstream-defaults-s42", "upstream-defaults-s7"]
    assert runs["r8-s7"]["seed"] == 7 and runs["r8-s7"]["config"] == "r8" and runs["r8-s7"]["reference"] == "rep-s7"
    for name, run in runs.items():
        train = load_yaml(tmp_path / "runs" / "rep" / name / "train.yaml")
        predict = load_yaml(tmp_path / "runs" / "rep" / name / "predict-telecom_test_100.yaml")
        assert train["seed"] == predict["seed"] == run["seed"], name
        manifest = json.loads((tmp_path / "runs" / "rep" / name / "manifest.json").read_text())
        assert manifest["seed"] == run["seed"]


@pytest.mark.parametrize("value, message", [
    ("[42, 7, 42]", "seeds.2: seed 42 is listed twice"),
    ("[42, 1.5]", "seeds.1: expected a whole number"),
    ("[42, '7']", "seeds.1: expected a whole number"),
    ("[]", "expected a non-empty list of integer seeds"),
    ("7", "expected a non-empty list of integer seeds"),
    (str(list(range(101))), "101 seeds; at most 100"),
    ("[-1]", "-1 is out of range"),
])
def test_bad_seeds_exit_2_with_one_message_naming_the_line(value, message, telecom_dir, tiny_gemma, tmp_path):
    spec = spec_file(tmp_path / "bad.yaml", tiny_gemma, telecom_dir, extra=f"seeds: {value}\n")
    result = render(spec, tmp_path / "runs", check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "bad.yaml:8: seeds" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_seed_and_seeds_together_are_refused(telecom_dir, tiny_gemma, tmp_path):
    spec = spec_file(tmp_path / "both.yaml", tiny_gemma, telecom_dir, extra="seed: 3\nseeds: [1, 2]\n")
    result = render(spec, tmp_path / "runs", check=False)
    assert result.returncode == 2 and "give seed: (one run per configuration) or seeds: (replicas), not both" \
        in result.stderr
