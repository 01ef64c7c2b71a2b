"""The pieces of chat/probe/export that need no model: prompt wrapping, questions files,
0.6's prediction decoding, srun command lines, file modes."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess

import pytest
from conftest import run_manifest

from telecom_lf import compat, fsutil, probe, rundir, slurm, use
from telecom_lf.chat import srun_command
from telecom_lf.cluster import Profile
from telecom_lf.errors import TlfError

pytestmark = pytest.mark.unit


def _model(wrapper):
    return use.RunModel("r", {"model_name_or_path": "/m"}, wrapper)


def test_wrap_puts_the_question_inside_the_datas_instruction():
    model = _model("回答中国电信手机用户的问题,{question},应该怎么做？")
    assert use.wrap(model, "怎么关") == "回答中国电信手机用户的问题,怎么关,应该怎么做？"
    assert use.wrap(model, "怎么关", raw=True) == "怎么关"
    assert use.wrap(_model(None), "怎么关") == "怎么关"
    # a question holding the placeholder text itself is not expanded twice
    assert use.wrap(model, "{question}") == "回答中国电信手机用户的问题,{question},应该怎么做？"


def test_instruction_wrapper_comes_from_the_split_manifest_or_the_imported_meta(tmp_path):
    meta_source = tmp_path / "all.json"
    (tmp_path / "all.meta.json").write_text(json.dumps({"instruction": "Q: {question}?"}), encoding="utf-8")
    manifest = tmp_path / "split_manifest.json"
    run = rundir.Run(tmp_path, run_manifest(split_manifest=str(manifest)))
    manifest.write_text(json.dumps({"source": str(meta_source)}), encoding="utf-8")
    assert use.instruction_wrapper(run) == "Q: {question}?"
    manifest.write_text(json.dumps({"source": str(meta_source), "instruction": "A {question} B"}), encoding="utf-8")
    assert use.instruction_wrapper(run) == "A {question} B"
    manifest.write_text(json.dumps({"instruction": "no placeholder"}), encoding="utf-8")
    assert use.instruction_wrapper(run) is None


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not text", "not UTF-8"),
    (b"", "no questions"),
    (b'{"question": 5}\n', "expected {\"question\""),
    (b'{"question": "a"\n', "not valid JSON"),
    (b"   \n\n", "no questions"),
    ("x" * 20_001 + "\n", "at most 20000"),
])
def test_questions_file_errors_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "questions.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TlfError, match=message) as error:
        probe.read_questions_file(path)
    assert str(path) in str(error.value)


def test_questions_file_takes_lines_and_json_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('怎么关\n{"question": "怎么开", "expected": "开通方式_1"}\n\n', encoding="utf-8")
    assert probe.read_questions_file(path) == [{"question": "怎么关", "expected": None},
                                               {"question": "怎么开", "expected": "开通方式_1"}]


def test_unwrap_recovers_the_question():
    assert probe._unwrap("P,{question},S", "P,abc,S") == "abc"
    assert probe._unwrap("P,{question},S", "other") == "other"


def test_blog_decoding_cleans_predictions_as_0_6_did_and_leaves_labels(tmp_path):
    from transformers import PreTrainedTokenizerBase

    path = tmp_path / "generated_predictions.jsonl"
    rows = [{"prompt": "p", "predict": "hello , world . it is n't", "label": "a , b"},
            {"prompt": "p", "predict": "取消方式_121", "label": "取消方式_121"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    compat._cleaned(str(path), lambda text: PreTrainedTokenizerBase.clean_up_tokenization(None, text))
    cleaned = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["predict"] for r in cleaned] == ["hello, world. it isn't", "取消方式_121"]
    assert [r["label"] for r in cleaned] == ["a , b", "取消方式_121"]


def test_header_marker_reads_only_the_header(tmp_path):
    config = tmp_path / "predict-x.yaml"
    config.write_text("# Rendered\n# tlf-lf: decode_predictions=0.6   (why)\nkey: 1\n# tlf-lf: dora_kernel=fast\n")
    assert rundir.header_marker(str(config), "decode_predictions") == "0.6"
    assert rundir.header_marker(str(config), "dora_kernel") is None
    assert rundir.header_marker(None, "dora_kernel") is None
    assert rundir.header_marker(str(tmp_path / "missing.yaml"), "dora_kernel") is None


def test_srun_chat_line_carries_the_profile_and_quotes_every_argument(tmp_path):
    profile = Profile(name="p", partition="kshdtest", gres="dcu", gpus_per_node=4, cpus_per_gpu=8, mem="64G",
                      setup=["source /opt/env.sh"], env={"HF_HOME": "/data/hf $(id)"})
    prefix = slurm.interactive_srun(profile, "chat-exp")
    assert prefix[:2] == ["srun", "--job-name=chat-exp"]
    assert {"--partition=kshdtest", "--gres=dcu:1", "--cpus-per-task=8", "--mem=64G"} <= set(prefix)
    hostile = str(tmp_path / "run $(touch pwned)")
    command = srun_command(prefix, slurm.setup_lines(profile), "/usr/bin/python3", [hostile, "--base"])
    assert command[-4:-1] == ["--pty", "bash", "-c"]
    script = command[-1]
    assert script.splitlines()[:3] == ["set -e", "source /opt/env.sh", "export HF_HOME='/data/hf $(id)'"]
    # the script's last line, run by bash, passes the hostile path through as one argument
    echo = script.splitlines()[-1].replace("exec /usr/bin/python3 -m telecom_lf.cli chat", "printf '%s\\n'")
    out = subprocess.run(["bash", "-c", echo], capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.splitlines() == [hostile, "--base"] and not (tmp_path / "pwned").exists()
    assert shlex.split(script.splitlines()[-1])[1:5] == ["/usr/bin/python3", "-m", "telecom_lf.cli", "chat"]


def test_atomic_write_gives_the_usual_mode_and_keeps_a_replaced_files_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        fsutil.atomic_write(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o664)
        fsutil.atomic_write(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o664 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_checkpoint_choice_is_checked_against_the_kept_ones(tmp_path):
    run = rundir.Run(tmp_path, run_manifest(trains=True))
    train = tmp_path / "train"
    (train / "checkpoint-10").mkdir(parents=True)
    (train / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"")
    (train / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (train / "checkpoint-20").mkdir()                    # no weights: not a usable checkpoint
    (train / "checkpoint-20" / "trainer_state.json").write_text("{}")
    with pytest.raises(TlfError, match="not trained yet"):
        use._adapter_dir(run, None)
    (train / "train_results.json").write_text("{}")
    (train / "adapter_model.safetensors").write_bytes(b"")
    assert use._adapter_dir(run, None) == (train, tmp_path.name)
    assert use._adapter_dir(run, "10")[0] == train / "checkpoint-10"
    for bad in ("20", "x", "../10", "best", "²", "1" * 5000):
        with pytest.raises(TlfError, match="kept steps: 10|selection"):
            use._adapter_dir(run, bad)


def test_with_a_selection_the_hint_names_the_selected_checkpoint_not_the_final_adapter(tmp_path):
    run = rundir.Run(tmp_path, run_manifest(trains=True, select={"on": "dev", "metric": "acc", "every": "epoch"}))
    train = tmp_path / "train"
    for step in (10, 20):
        (train / f"checkpoint-{step}").mkdir(parents=True)
        (train / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"")
        (train / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (train / "train_results.json").write_text("{}")
    (train / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / rundir.SELECTION).write_text(json.dumps({"chosen": {"step": 10}}))
    (tmp_path / rundir.SELECTED).symlink_to("train/checkpoint-10")
    with pytest.raises(TlfError, match=r"leave it out for the selected checkpoint-10, or --checkpoint last"):
        use._adapter_dir(run, "30")
    assert use._adapter_dir(run, None)[0] == tmp_path / rundir.SELECTED
    assert use._adapter_dir(run, "last")[0] == train


def test_hostile_questions_stay_data_and_the_probe_stays_under_its_report_dir(tmp_path):
    run = rundir.Run(tmp_path / "run", run_manifest())
    hostile = "怎么关\n$(touch pwned)`id`; ../../etc/passwd"
    [asked] = probe.questions(run, "P,{question},S", [{"question": hostile, "expected": None}], None, 5, False)
    assert asked.prompt == f"P,{hostile},S" and asked.shown == hostile and asked.expected is None
    report_dir = tmp_path / "report"
    where = probe.probe_dir(report_dir, [asked])
    assert where.parent == report_dir / "probe" and len(where.name) == 12
    probe._write_dataset(where, [asked])
    written = json.loads((where / "tlf_probe.json").read_text(encoding="utf-8"))
    assert written == [{"instruction": f"P,{hostile},S", "input": "", "output": ""}]
    assert not (tmp_path / "pwned").exists()


def test_question_size_and_count_are_bounded(tmp_path):
    with pytest.raises(TlfError, match="at most 20000"):
        probe.check_question("x" * 20_001, "--question")
    with pytest.raises(TlfError, match="empty question"):
        probe.check_question(" \n\t", "--question")
    many = tmp_path / "many.txt"
    many.write_text("怎么关\n" * (probe.MAX_QUESTIONS + 1), encoding="utf-8")
    with pytest.raises(TlfError, match=f"more than {probe.MAX_QUESTIONS} questions"):
        probe.read_questions_file(many)
