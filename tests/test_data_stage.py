"""The data stage through the real ``tlf`` command: import, split, check, register."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_llamafactory, tlf_bin

from telecom_lf import data, synth
from telecom_lf.errors import TlfError
from telecom_lf.fsutil import sha256_file

# unit unless marked otherwise (conftest: kinds are exclusive)
UPSTREAM_INFO = REPO / "tests" / "fixtures" / "llamafactory-0.9.5-dataset_info.json"


def tlf(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stderr}")
    return result


def write_raw(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8", **extra) -> Path:
    frame = pd.DataFrame({"用户问题": [q for q, _ in rows], "答案": [a for _, a in rows], **extra})
    if path.suffix == ".csv":
        path.write_bytes(frame.to_csv(index=False).encode(encoding))
    elif path.suffix == ".xlsx":
        frame.to_excel(path, index=False)
    elif path.suffix == ".json":
        path.write_text(frame.to_json(orient="records", force_ascii=False), encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text(frame.to_json(orient="records", force_ascii=False, lines=True), encoding="utf-8")
    return path


BLOG_ROWS = [
    ("9元百度专属定向流量包如何取消", "取消方式_68"),
    ("你告诉我7天5g视频会员流量包怎么开通，多少钱", "业务简介_111|9.9|11.9|开通方式_98|业务简介_109|开通方式_97"),
]


def test_synth_is_deterministic_and_shaped_like_the_competition():
    first, again = synth.generate(5000, seed=3), synth.generate(5000, seed=3)
    assert first == again and first != synth.generate(5000, seed=4)
    assert len(set(first)) == 5000
    long_share = sum(len(r.answer) > 10 for r in first) / len(first)
    assert 0.2 < long_share < 0.3
    counts = Counter(data.category_of(r.answer) for r in first)
    assert max(counts.values()) > 5 * min(counts.values())  # imbalanced like the real file
    assert any("|" in r.answer and "." in r.answer for r in first)  # items and prices


def test_every_synthetic_answer_follows_from_its_question_and_the_split_says_so(telecom_dir):
    rows = synth.generate(5000, seed=0)
    assert all(synth.derivable(r.question, r.answer) for r in rows)
    first = rows[0]
    number = first.answer.rsplit("_", 1)[1].split("|")[0]
    assert not synth.derivable(first.question, first.answer.replace(number, str(int(number) + 1), 1))
    assert not synth.derivable("你好", first.answer)
    # every id's document is in the catalogue the demo's base model reads; no line pairs it with a question
    catalogue = "\n".join(synth.catalogue())
    assert all(item in catalogue for r in rows for item in r.answer.split("|") if "_" in item)
    assert not any(r.question in line for r in rows[:200] for line in synth.catalogue())
    assert not any("_" in line for line in synth.glossary())      # the glossary names no document
    manifest = json.loads((telecom_dir / "split_manifest.json").read_text(encoding="utf-8"))
    assert {name: c["acc"] for name, c in manifest["ceiling"].items()} == dict.fromkeys(manifest["splits"], 100.0)


def test_synth_cli_writes_identical_bytes(tmp_path):
    tlf("data", "synth", "--rows", 300, "--seed", 7, "--out", tmp_path / "a.csv")
    tlf("data", "synth", "--rows", 300, "--seed", 7, "--out", tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert tlf("data", "synth", "--out", tmp_path / "a.csv", check=False).returncode == 2


@pytest.mark.parametrize("suffix,encoding", [(".csv", "utf-8"), (".csv", "gbk"), (".csv", "utf-8-sig"),
                                             (".xlsx", None), (".json", None), (".jsonl", None)])
def test_import_writes_the_blogs_instruction_byte_for_byte(tmp_path, suffix, encoding):
    raw = write_raw(tmp_path / f"raw{suffix}", BLOG_ROWS, encoding or "utf-8")
    tlf("data", "import", raw, "--out", tmp_path / "out")
    records = json.loads((tmp_path / "out" / "telecom_all.json").read_text(encoding="utf-8"))
    expected = "回答中国电信手机用户的问题,9元百度专属定向流量包如何取消,应该怎么做？".encode()
    assert records[0]["instruction"].encode("utf-8") == expected
    assert records[0] == {"instruction": expected.decode(), "input": "", "output": "取消方式_68"}
    assert records[1]["output"] == BLOG_ROWS[1][1]
    meta = json.loads((tmp_path / "out" / "telecom_all.meta.json").read_text(encoding="utf-8"))
    assert meta["categories"] == ["取消方式", "业务简介"]


def test_gbk_with_wrong_encoding_is_refused_not_mojibake(tmp_path):
    raw = write_raw(tmp_path / "raw.csv", BLOG_ROWS, "gbk")
    result = tlf("data", "import", raw, "--out", tmp_path / "out", "--encoding", "utf-8", check=False)
    assert result.returncode == 2 and "raw.csv" in result.stderr and "--encoding" in result.stderr
    assert not (tmp_path / "out").exists()


def test_category_column_and_custom_instruction(tmp_path):
    raw = write_raw(tmp_path / "raw.csv", BLOG_ROWS, 类别=["退订", "咨询"])
    tlf("data", "import", raw, "--out", tmp_path / "out", "--category-column", "类别",
        "--instruction", "问：{question}")
    meta = json.loads((tmp_path / "out" / "telecom_all.meta.json").read_text(encoding="utf-8"))
    assert meta["categories"] == ["退订", "咨询"]
    records = json.loads((tmp_path / "out" / "telecom_all.json").read_text(encoding="utf-8"))
    assert records[0]["instruction"] == "问：9元百度专属定向流量包如何取消"


def _split(tmp_path: Path, *extra) -> tuple[Path, dict]:
    if not (tmp_path / "raw.csv").exists():
        tlf("data", "synth", "--rows", 5000, "--out", tmp_path / "raw.csv")
    tlf("data", "import", tmp_path / "raw.csv", "--out", tmp_path / "data")
    tlf("data", "split", tmp_path / "data" / "telecom_all.json", *extra)
    manifest = json.loads((tmp_path / "data" / "split_manifest.json").read_text(encoding="utf-8"))
    return tmp_path / "data", manifest


def test_split_is_balanced_nested_disjoint_and_deterministic(tmp_path):
    out, manifest = _split(tmp_path)
    full = manifest["class_counts"]
    total = sum(full.values())
    splits = manifest["splits"]
    assert {n: s["rows"] for n, s in splits.items()} == {
        "telecom_test_100": 100, "telecom_train_100": 100, "telecom_train_400": 400, "telecom_dev_200": 200,
        "telecom_train_all": 4700}
    for name, split in splits.items():
        for category, count in full.items():
            exact = split["rows"] * count / total
            assert abs(split["class_counts"].get(category, 0) - exact) < 1, (name, category)
    rows = {n: set(s["source_rows"]) for n, s in splits.items()}
    assert rows["telecom_train_100"] < rows["telecom_train_400"] < rows["telecom_train_all"]
    assert not rows["telecom_test_100"] & rows["telecom_train_all"]
    assert not rows["telecom_dev_200"] & (rows["telecom_train_all"] | rows["telecom_test_100"])
    assert len(rows["telecom_test_100"] | rows["telecom_dev_200"] | rows["telecom_train_all"]) == total
    for name, split in splits.items():
        assert sha256_file(out / split["file"]) == split["sha256"]
    first = {p.name: p.read_bytes() for p in out.glob("telecom_*.json")}
    shutil.rmtree(out)
    _split(tmp_path)
    assert {p.name: p.read_bytes() for p in out.glob("telecom_*.json")} == first
    report = tlf("data", "check", out)
    assert "telecom_test_100" in report.stdout
    # a hold-out split shares no row and no exact question with the test set (data check says
    # "question+answer is in <test>: N; same question: M"; only normalised near-duplicates may remain)
    leakage = [line for line in report.stdout.splitlines() if line.startswith("PROBLEM: leakage")]
    assert all(f"question+answer is in {line.split(' -> ')[1].split(':')[0]}: 0; same question: 0;" in line
               for line in leakage), leakage
    assert any("-> telecom_dev_200" in line for line in leakage)   # the dev set is checked like the test set


def test_blog_mode_reproduces_the_overlap_and_check_reports_it(tmp_path):
    out, manifest = _split(tmp_path, "--mode", "blog")
    assert set(manifest["splits"]) == {"telecom_test_100", "telecom_train_100", "telecom_train_400",
                                       "telecom_dev_200", "telecom_train_5000"}
    assert manifest["splits"]["telecom_train_5000"]["rows"] == 5000
    strict = tlf("data", "check", out, "--strict", check=False)
    assert strict.returncode == 1
    assert "leakage telecom_train_5000 -> telecom_test_100" in strict.stdout
    assert "question+answer is in telecom_test_100: 100" in strict.stdout


def test_merge_into_a_real_upstream_dataset_info_keeps_every_entry(tmp_path):
    out, _ = _split(tmp_path)
    info = tmp_path / "LLaMA-Factory" / "data" / "dataset_info.json"
    info.parent.mkdir(parents=True)
    shutil.copy(UPSTREAM_INFO, info)
    upstream = json.loads(UPSTREAM_INFO.read_text(encoding="utf-8"))
    tlf("data", "register", out, "--into", info)
    merged = json.loads(info.read_text(encoding="utf-8"))
    assert list(merged)[:len(upstream)] == list(upstream)
    assert all(merged[k] == v for k, v in upstream.items())
    assert merged["telecom_train_400"]["file_name"] == "../../data/telecom_train_400.json"
    before = info.read_bytes()
    assert "0 entries added" in tlf("data", "register", out, "--into", info).stdout
    assert info.read_bytes() == before
    # Another tool's entry under the same name is never replaced silently.
    merged["telecom_test_100"] = {"file_name": "somebody_else.json"}
    info.write_text(json.dumps(merged), encoding="utf-8")
    refused = tlf("data", "register", out, "--into", info, check=False)
    assert refused.returncode == 2 and "telecom_test_100" in refused.stderr and "--force" in refused.stderr
    assert json.loads(info.read_text())["telecom_test_100"] == {"file_name": "somebody_else.json"}
    tlf("data", "register", out, "--into", info, "--force")
    forced = json.loads(info.read_text(encoding="utf-8"))
    assert forced["telecom_test_100"]["file_name"] == "../../data/telecom_test_100.json"
    assert list(forced) == list(merged)


def test_concurrent_registrations_in_real_processes_lose_nothing(tmp_path):
    info = tmp_path / "dataset_info.json"
    shutil.copy(UPSTREAM_INFO, info)
    writers = []
    for i in range(6):
        manifest_dir = tmp_path / f"set{i}"
        manifest_dir.mkdir()
        (manifest_dir / "split_manifest.json").write_text(json.dumps(
            {"splits": {f"set{i}_{j}": {"file": f"set{i}_{j}.json"} for j in range(20)}}))
        writers.append(subprocess.Popen([tlf_bin(), "data", "register", str(manifest_dir), "--into", str(info)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert [w.wait(timeout=120) for w in writers] == [0] * 6
    merged = json.loads(info.read_text(encoding="utf-8"))
    assert len(merged) == 104 + 6 * 20


BAD_INPUTS = {
    "missing column": (lambda p: p.write_text("问题,答案\n你好,取消方式_1\n", encoding="utf-8"),
                       ["raw.csv", "missing column", "用户问题"]),
    "empty answer": (lambda p: p.write_text("用户问题,答案\n你好,取消方式_1\n再见,  \n", encoding="utf-8"),
                     ["raw.csv", "line 3", "'答案'", "empty"]),
    "blank row": (lambda p: p.write_text("用户问题,答案\n你好,取消方式_1\n,\n再见,取消方式_2\n", encoding="utf-8"),
                  ["raw.csv", "line 3", "blank row"]),
    "duplicate row": (lambda p: p.write_text("用户问题,答案\n你好,取消方式_1\n再见,取消方式_2\n你好,取消方式_1\n",
                                             encoding="utf-8"), ["raw.csv", "line 4", "duplicate of line 2"]),
    "unreadable encoding": (lambda p: p.write_bytes(b"\xff\xfe\xfa\x00\x81\x30\x81" * 20),
                            ["raw.csv", "cannot decode"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_raw_input_names_the_place_and_writes_nothing(tmp_path, case):
    writer, expected = BAD_INPUTS[case]
    raw = tmp_path / "raw.csv"
    writer(raw)
    result = tlf("data", "import", raw, "--out", tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not (tmp_path / "out").exists()


def test_sheet_without_the_columns(tmp_path):
    raw = tmp_path / "raw.xlsx"
    with pd.ExcelWriter(raw) as writer:
        pd.DataFrame({"说明": ["封面"]}).to_excel(writer, sheet_name="cover", index=False)
        pd.DataFrame({"用户问题": ["你好"], "答案": ["取消方式_1"]}).to_excel(writer, sheet_name="data", index=False)
    result = tlf("data", "import", raw, "--out", tmp_path / "out", check=False)
    assert result.returncode == 2 and "raw.xlsx (sheet first)" in result.stderr and "用户问题" in result.stderr
    missing = tlf("data", "import", raw, "--out", tmp_path / "out", "--sheet", "nope", check=False)
    assert missing.returncode == 2 and "nope" in missing.stderr
    tlf("data", "import", raw, "--out", tmp_path / "out", "--sheet", "data")


def test_duplicates_can_be_dropped_on_request(tmp_path):
    raw = tmp_path / "raw.csv"
    BAD_INPUTS["duplicate row"][0](raw)
    tlf("data", "import", raw, "--out", tmp_path / "out", "--drop-duplicates")
    assert len(json.loads((tmp_path / "out" / "telecom_all.json").read_text(encoding="utf-8"))) == 2


@pytest.mark.parametrize("args,expected", [
    (["--test-size", "6000"], "asks for 6000 rows"),
    (["--train-sizes", "100,4950"], "asks for 4950 rows"),
    (["--train-sizes", "a,b"], "--train-sizes"),
])
def test_impossible_splits_write_nothing(tmp_path, args, expected):
    tlf("data", "synth", "--rows", 5000, "--out", tmp_path / "raw.csv")
    tlf("data", "import", tmp_path / "raw.csv", "--out", tmp_path / "data")
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    result = tlf("data", "split", tmp_path / "data" / "telecom_all.json", *args, check=False)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


def test_class_too_small_for_the_split():
    # Per-class quotas beyond what a class has left are refused with the class named.
    with pytest.raises(TlfError, match="class 'b' is too small for the requested split: needs 5 rows, 2 left"):
        data.largest_remainder(10, {"a": 5, "b": 5}, {"a": 5, "b": 2})


def test_existing_different_subset_is_not_overwritten_without_force(tmp_path):
    out, _ = _split(tmp_path)
    (out / "telecom_test_100.json").write_text("[]", encoding="utf-8")
    result = tlf("data", "split", out / "telecom_all.json", "--seed", "7", check=False)
    assert result.returncode == 2 and "telecom_test_100.json exists" in result.stderr
    assert (out / "telecom_test_100.json").read_text() == "[]"


@pytest.mark.integration
def test_registered_subset_trains_in_real_llamafactory(tmp_path, tiny_gemma):
    out, _ = _split(tmp_path)
    lf_data = tmp_path / "LLaMA-Factory" / "data"
    lf_data.mkdir(parents=True)
    shutil.copy(UPSTREAM_INFO, lf_data / "dataset_info.json")
    tlf("data", "register", out, "--into", lf_data / "dataset_info.json")
    config = {"model_name_or_path": str(tiny_gemma), "stage": "sft", "do_train": True,
              "finetuning_type": "lora", "dataset": "telecom_train_100", "dataset_dir": str(lf_data),
              "template": "default", "cutoff_len": 128, "output_dir": str(tmp_path / "adapter"),
              "num_train_epochs": 1.0, "report_to": "none", "overwrite_output_dir": True}
    run_llamafactory(config, tmp_path)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_strict_holdout_keeps_near_duplicates_of_test_questions_out_of_training(tmp_path):
    out, manifest = _split(tmp_path, "--strict-holdout")
    assert manifest["excluded_near_duplicates_of_test"] > 0  # the synthetic rows vary only in punctuation
    report = tlf("data", "check", out, "--strict")
    assert report.returncode == 0 and "no leakage" in report.stdout
    sizes = {n: s["rows"] for n, s in manifest["splits"].items()}
    assert sizes["telecom_train_all"] == 4700 - manifest["excluded_near_duplicates_of_test"]
    assert sizes["telecom_test_100"] == 100 and sizes["telecom_train_400"] == 400


def test_the_dev_set_is_held_out_and_leaves_the_blogs_subsets_as_they_were(tmp_path):
    """Cut after the fixed-size train subsets, from rows none of them holds: train_100 and
    train_400 are the same with or without it; train_all leaves it out."""
    _, with_dev = _split(tmp_path)
    without_dir = tmp_path / "without"
    tlf("data", "split", tmp_path / "data" / "telecom_all.json", "--out", without_dir, "--dev-size", "0")
    without = json.loads((without_dir / "split_manifest.json").read_text(encoding="utf-8"))
    assert "telecom_dev_200" not in without["splits"]
    for name in ("telecom_test_100", "telecom_train_100", "telecom_train_400"):
        assert with_dev["splits"][name]["source_rows"] == without["splits"][name]["source_rows"], name
    dev = set(with_dev["splits"]["telecom_dev_200"]["source_rows"])
    assert set(without["splits"]["telecom_train_all"]["source_rows"]) - dev \
        == set(with_dev["splits"]["telecom_train_all"]["source_rows"])
    assert with_dev["splits"]["telecom_dev_200"]["role"] == "dev"
    full, counts = with_dev["class_counts"], with_dev["splits"]["telecom_dev_200"]["class_counts"]
    assert all(abs(counts.get(c, 0) - 200 * n / 5000) < 1 for c, n in full.items())


def test_strict_holdout_keeps_dev_questions_out_of_training_too(tmp_path):
    out, manifest = _split(tmp_path, "--strict-holdout")
    records = {name: json.loads((out / split["file"]).read_text(encoding="utf-8"))
               for name, split in manifest["splits"].items()}
    dev = {data.normalise_question(r["instruction"]) for r in records["telecom_dev_200"]}
    for name in ("telecom_train_100", "telecom_train_400", "telecom_train_all"):
        assert not dev & {data.normalise_question(r["instruction"]) for r in records[name]}, name


def test_blog_mode_cuts_the_dev_set_outside_its_subsets_and_check_says_what_it_overlaps(tmp_path):
    out, manifest = _split(tmp_path, "--mode", "blog")
    rows = {n: set(s["source_rows"]) for n, s in manifest["splits"].items()}
    assert not rows["telecom_dev_200"] & (rows["telecom_test_100"] | rows["telecom_train_400"])
    assert rows["telecom_dev_200"] <= rows["telecom_train_5000"]
    assert any("telecom_dev_200 are inside its training set" in w or "telecom_dev_200" in w
               for w in manifest["warnings"])
    check = tlf("data", "check", out).stdout
    assert "leakage telecom_train_5000 -> telecom_dev_200: counted in rows of telecom_train_5000 (" in check
    assert "against the 200 rows of telecom_dev_200: question+answer is in telecom_dev_200: 200;" in check
    assert "200 of the 200 questions of telecom_dev_200 are seen in training" in check
    assert ("leakage telecom_train_400 -> telecom_dev_200: counted in rows of telecom_train_400 (400 rows) against the "
            "200 rows of telecom_dev_200: question+answer is in telecom_dev_200: 0; same question: 0;") in check


def test_a_small_file_gets_no_dev_set_by_default_and_a_refusal_when_asked(tmp_path):
    tlf("data", "synth", "--rows", 600, "--out", tmp_path / "raw.csv")
    tlf("data", "import", tmp_path / "raw.csv", "--out", tmp_path / "data")
    quiet = tlf("data", "split", tmp_path / "data" / "telecom_all.json")
    assert "no dev set: telecom_dev_200 needs 200 rows" in quiet.stderr
    asked = tlf("data", "split", tmp_path / "data" / "telecom_all.json", "--out", tmp_path / "x", "--dev-size", 200,
                check=False)
    assert asked.returncode == 2 and "subset telecom_dev_200: asks for 200 rows, only 100 left" in asked.stderr
    assert not (tmp_path / "x").exists()


def test_resplitting_with_other_sizes_leaves_no_orphan_subsets_or_entries(tmp_path):
    tlf("data", "synth", "--rows", 600, "--out", tmp_path / "raw.csv")
    tlf("data", "import", tmp_path / "raw.csv", "--out", tmp_path / "data")
    source, out = tmp_path / "data" / "telecom_all.json", tmp_path / "split"
    tlf("data", "split", source, "--out", out, "--test-size", 50, "--train-sizes", "100,200")
    info = out / "dataset_info.json"
    before = info.read_bytes()
    again = tlf("data", "split", source, "--out", out, "--test-size", 50, "--train-sizes", "100,300", check=False)
    assert again.returncode == 2 and "telecom_train_200" in again.stderr and "--force" in again.stderr, again.stderr
    assert info.read_bytes() == before and (out / "telecom_train_200.json").exists()
    tlf("data", "split", source, "--out", out, "--test-size", 50, "--train-sizes", "100,300", "--force")
    entries = json.loads(info.read_text(encoding="utf-8"))
    assert "telecom_train_200" not in entries and not (out / "telecom_train_200.json").exists()
    assert {"telecom_train_100", "telecom_train_300", "telecom_test_50"} <= set(entries)
