"""Scoring (the blog's arithmetic, LLaMA-Factory's BLEU/ROUGE, bad input) and reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import tlf_bin

from telecom_lf import score

# unit unless marked otherwise (conftest: kinds are exclusive)


def tlf(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stderr}")
    return result


def blog_like_rows(n_long: int, long_correct: int, short_correct: int, newline: bool) -> list[dict]:
    """100 rows: ``n_long`` labels over 10 characters, of which ``long_correct`` are predicted exactly."""
    rows = []
    for i in range(100):
        label = f"业务简介_{100 + i}|9.9|开通方式_98" if i < n_long else f"取消方式_{i}"
        correct = i < long_correct if i < n_long else i - n_long < short_correct
        rows.append({"prompt": "Human: q<eos>\nAssistant:", "predict": label if correct else "开通方式_1",
                     "label": label + ("\n" if newline else "")})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("n_long,long_correct,short_correct,recall,acc", [
    (23, 5, 19, 21.74, 24.0),   # the blog's test_100: Recall 21.74, Acc 24
    (29, 4, 15, 13.79, 19.0),   # the blog's train_100: Recall 13.79, Acc 19
])
def test_the_blogs_arithmetic(tmp_path, n_long, long_correct, short_correct, recall, acc):
    path = write_jsonl(tmp_path / "p.jsonl", blog_like_rows(n_long, long_correct, short_correct, newline=True))
    result = tlf("score", path, "--json", tmp_path / "s.json")
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["long_recall"] == recall and scores["long_rows"] == n_long and scores["acc"] == acc
    # 0.9.5 labels end in "\n": the blog's unstripped comparison would see nothing right.
    assert scores["acc_raw"] == 0.0
    assert f"long_recall      {recall}" in result.stdout
    old = write_jsonl(tmp_path / "old.jsonl", [{"label": r["label"].rstrip("\n"), "predict": r["predict"]}
                                               for r in blog_like_rows(n_long, long_correct, short_correct, False)])
    legacy = score.score_rows(score.read_predictions(old).rows)
    assert legacy["acc_raw"] == acc and legacy["long_recall_raw"] == recall  # the blog's script, exactly


def test_item_level_f1_credits_partial_answers():
    rows = [score.Row(1, "业务简介_111|9.9|开通方式_98", "业务简介_111|9.9|11.9|开通方式_98\n"),
            score.Row(2, "取消方式_68", "取消方式_68\n")]
    scores = score.score_rows(rows)
    assert scores["acc"] == 50.0
    assert scores["item_precision"] == 100.0 and scores["item_recall"] == 80.0 and scores["item_f1"] == 88.89


def test_bleu_rouge_equal_llamafactorys_own_metric_code():
    """tlf's memoised implementation against LLaMA-Factory's ComputeSimilarity on the same strings."""
    pairs = [("取消方式_68", "取消方式_68\n"), ("业务简介_111|9.9", "业务简介_111|9.9|11.9|开通方式_98\n"),
             ("", "开通方式_97\n"), ("开通方式_1", "取消方式_2\n"), ("取消方式_68", "取消方式_68\n")]
    upstream = score.llamafactory_similarity(pairs)
    ours = score.score_rows([score.Row(i, p, x) for i, (p, x) in enumerate(pairs)])
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        assert ours[key] == pytest.approx(upstream[key], abs=1e-4), key


BAD = {
    "malformed JSON": (b'{"predict": "a", "label": "a"}\n{"predict": "a", "lab\n', "line 2", "not valid JSON"),
    "missing key": (b'{"predict": "a", "label": "a"}\n{"predict": "b"}\n', "line 2", "missing key(s) ['label']"),
    "empty file": (b"", "", "no predictions to score"),
    "non-UTF-8": (b'{"predict": "a", "label": "a"}\n' + '{"predict": "取消", "label": "a"}\n'.encode("gbk"),
                  "line 2", "not UTF-8"),
    "NaN": (b'{"predict": "a", "label": "a"}\n{"predict": NaN, "label": "a"}\n', "line 2", "NaN"),
    "not strings": (b'{"predict": 1, "label": "a"}\n', "line 1", "must be strings"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_predictions_name_file_and_line(tmp_path, case):
    blob, line, message = BAD[case]
    path = tmp_path / "generated_predictions.jsonl"
    path.write_bytes(blob)
    result = tlf("score", path, "--json", tmp_path / "s.json", check=False)
    assert result.returncode == 2
    assert str(path) in result.stderr and line in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "s.json").exists()
    if case not in ("empty file", "not strings"):
        skipped = tlf("score", path, "--skip-bad", "--json", tmp_path / "s.json")
        assert json.loads((tmp_path / "s.json").read_text())["skipped"] == 1 and "skipped:" in skipped.stderr


def test_per_category_accuracy_from_the_split_manifest(telecom_dir, tmp_path):
    records = json.loads((telecom_dir / "telecom_test_100.json").read_text(encoding="utf-8"))
    rows = [{"predict": r["output"] if i % 2 == 0 else "x", "label": r["output"] + "\n"} for i, r in enumerate(records)]
    out = tmp_path / "predict-telecom_test_100"
    out.mkdir()
    write_jsonl(out / "generated_predictions.jsonl", rows[:40])  # max_samples keeps the first rows
    tlf("score", out / "generated_predictions.jsonl", "--data", telecom_dir, "--json", tmp_path / "s.json")
    by_category = json.loads((tmp_path / "s.json").read_text())["by_category"]
    assert sum(v["rows"] for v in by_category.values()) == 40
    manifest = json.loads((telecom_dir / "split_manifest.json").read_text(encoding="utf-8"))
    first = manifest["splits"]["telecom_test_100"]["categories"][0]
    assert first in by_category


@pytest.mark.integration
def test_scores_equal_a_real_predict_runs_predict_results(tiny_gemma, telecom_dir, tmp_path):
    """LLaMA-Factory's predict_results.json and tlf score on the same generated_predictions.jsonl."""
    from conftest import add_dataset, run_llamafactory

    rows = json.loads((telecom_dir / "telecom_train_400.json").read_text(encoding="utf-8"))[:48]
    add_dataset(tmp_path, "rows48", rows)
    common = {"stage": "sft", "template": "default", "dataset_dir": str(tmp_path), "cutoff_len": 128,
              "report_to": "none", "finetuning_type": "full", "overwrite_output_dir": True}
    run_llamafactory({**common, "model_name_or_path": str(tiny_gemma), "do_train": True, "dataset": "rows48",
                      "output_dir": str(tmp_path / "m"), "learning_rate": 5.0e-3, "num_train_epochs": 12.0,
                      "save_strategy": "no"}, tmp_path, "train")
    run_llamafactory({**common, "model_name_or_path": str(tmp_path / "m"), "do_predict": True,
                      "predict_with_generate": True, "eval_dataset": "rows48", "output_dir": str(tmp_path / "p"),
                      "do_sample": False, "max_new_tokens": 24, "per_device_eval_batch_size": 8}, tmp_path, "predict")
    upstream = json.loads((tmp_path / "p" / "predict_results.json").read_text())
    ours = score.score_rows(score.read_predictions(tmp_path / "p" / "generated_predictions.jsonl").rows)
    assert 0 < ours["rouge-1"] < 100  # a partly trained model: neither all right nor all wrong
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        assert ours[key] == pytest.approx(upstream[f"predict_{key}"], abs=1e-4), key


@pytest.mark.integration
def test_report_over_a_real_three_run_sweep_with_a_missing_run(tiny_gemma, telecom_dir, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"""name: sweep3
model: {tiny_gemma}
data: {{dir: {telecom_dir}, train: telecom_train_100, predict: [telecom_test_100]}}
template: default
train: {{lora_target: all, num_train_epochs: 2.0, learning_rate: 1.0e-3, cutoff_len: 128}}
sweep:
  grid: {{lora_rank: [2, 4, 8]}}
  tie: {{lora_alpha: 2 * lora_rank}}
predict: {{max_samples: 8, max_new_tokens: 12, per_device_eval_batch_size: 8}}
""")
    run = tlf("run", spec, "--out", tmp_path / "runs", "--only", "r2-a4", "--only", "r8-a16")
    assert "report:" in run.stdout
    report_dir = tmp_path / "runs" / "sweep3" / "report"
    table = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "| r2-a4 | done |" in table and "| r8-a16 | done |" in table and "| r4-a8 | rendered |" in table
    import csv

    rows = list(csv.DictReader((report_dir / "report.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["run"] for r in rows] == ["r2-a4", "r4-a8", "r8-a16"]
    columns = list(rows[0])
    assert columns[:3] == ["run", "state", "acc % [telecom_test_100]"]     # the test set first, then what varies
    assert columns.index("lora_rank") < columns.index("lora_alpha") and rows[0]["lora_rank"] == "2"
    # rank and its tied alpha move together: one plot, not one per argument
    assert sorted(p.name for p in report_dir.glob("*.png")) == ["loss.png", "metrics_vs_lora_rank+lora_alpha.png"]
    for png in report_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    params = {r["run"]: r["trainable params"] for r in rows}
    assert int(params["r8-a16"]) > int(params["r2-a4"]) > 0 and params["r4-a8"] == ""
    _open_in_chromium(report_dir / "report.html", tmp_path, runs=3, questions=8)


def _open_in_chromium(page_path, tmp_path, runs: int, questions: int) -> None:
    """The report of real runs, in a real browser: no console error, a row per run, every answer."""
    import os

    from browser import Page, chromium

    if chromium() is None:
        assert os.environ.get("TLF_REQUIRE_BROWSER") != "1", "no chromium on PATH"
        return
    page = Page(page_path.as_uri(), tmp_path / "chromium")
    try:
        assert page.evaluate("document.querySelectorAll('#comparison tbody tr').length") == runs
        assert page.evaluate("document.querySelectorAll('#questions tbody tr').length") == questions
        page.settle()
        assert page.errors == []
    finally:
        page.close()


def test_score_refuses_to_write_its_json_over_the_predictions(tmp_path):
    predictions = tmp_path / "generated_predictions.jsonl"
    blob = '{"prompt": "q", "predict": "a", "label": "a"}\n'
    predictions.write_text(blob)
    result = tlf("score", predictions, "--json", tmp_path / "." / "generated_predictions.jsonl", check=False)
    assert result.returncode == 2 and "is one of this command's inputs" in result.stderr
    assert predictions.read_text() == blob
