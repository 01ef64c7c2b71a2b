"""The report, from the files runs leave on disk: comparisons, units, plots, states, resumed runs.

Each experiment here is written as LLaMA-Factory and tlf's steps write one (experiment.json,
manifest.json, trainer_log.jsonl, train_results.json, generated_predictions.jsonl, scores.json
from tlf's own scorer, steps/*.json), so every observation of the report issue is checked in
seconds; the integration and Slurm suites build reports from real runs too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from telecom_lf import data as data_mod
from telecom_lf import report, rundir, score

pytestmark = pytest.mark.unit
SET = "telecom_test_100"


def _log(steps, epochs_per_step=0.5, start=0.0, loss=2.0):
    return [{"current_steps": s, "total_steps": 40, "loss": loss - 0.01 * s, "epoch": round(s * epochs_per_step, 3),
             "percentage": s * 2.5, "elapsed_time": f"0:00:{int(start + s):02d}", "remaining_time": "0:00:10"}
            for s in steps]


def make_run(root: Path, data: Path, name: str, right: int = 0, rows: int = 10, answer=None, log=None,
             results=None, failed: str | None = None) -> Path:
    """One run directory: manifest, datasets entry, trainer log, predictions of ``rows`` test rows
    (the first ``right`` answered exactly, the rest with ``answer`` or a wrong text), scores."""
    run_dir = root / name
    (run_dir / "train").mkdir(parents=True)
    info = json.loads((data / "dataset_info.json").read_text())
    (run_dir / rundir.DATASETS_FILE).write_text(json.dumps({SET: info[SET]}))
    (run_dir / rundir.MANIFEST).write_text(json.dumps({
        "predict_sets": [SET], "files": {}, "model": {"name": "m", "path": "/m"}, "trains": True,
        "dataset_dir": str(data), "split_manifest": str(data / "split_manifest.json")}))
    if log is not None:
        (run_dir / "train" / "trainer_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    if failed:
        (run_dir / rundir.STEPS).mkdir()
        (run_dir / rundir.STEPS / "train.json").write_text(json.dumps(
            {"step": "train", "state": "failed", "cause": failed, "log": str(run_dir / "logs" / "train.log")}))
        return run_dir
    (run_dir / "train" / "train_results.json").write_text(json.dumps(results or {"train_runtime": 20.0,
                                                                               "train_samples_per_second": 50.0}))
    (run_dir / "train" / "adapter_model.safetensors").write_bytes(b"")
    records = json.loads((data / f"{SET}.json").read_text())[:rows]
    predict = run_dir / rundir.predict_dir(SET)
    predict.mkdir()
    lines = [{"prompt": r["instruction"], "label": r["output"] + "\n",
              "predict": r["output"] if i < right else (answer if answer is not None else f"wrong {i}")}
             for i, r in enumerate(records)]
    (predict / "generated_predictions.jsonl").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    )
    (predict / "predict_results.json").write_text("{}")
    rows_ = score.read_predictions(predict / "generated_predictions.jsonl").rows
    scored = score.score_rows(rows_, categories=score.categories_for(data, SET))
    (run_dir / rundir.SCORES).write_text(json.dumps({"run": name, "sets": {SET: scored}}))
    return run_dir


def make_experiment(root: Path, runs: list[dict], axes: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / rundir.EXPERIMENT).write_text(json.dumps({
        "experiment": "e", "spec": "/specs/e.yaml", "predict_sets": [SET], "axes": axes,
        "runs": [{"varied": {}, "baseline": False, "reference": None, "label": None, **r} for r in runs]}))
    return root


@pytest.fixture
def vary_study(tmp_path, telecom_dir):
    """The blog's A/B method: a base, two runs that each change one argument, and the upstream baseline."""
    root = tmp_path / "e"
    runs = [{"name": "r4", "point": {"lora_rank": 4, "use_dora": False}, "label": "A/B base"},
            {"name": "r8", "point": {"lora_rank": 8, "use_dora": False}, "reference": "r4", "varied": {"lora_rank": 8}},
            {"name": "r4-dora", "point": {"lora_rank": 4, "use_dora": True}, "reference": "r4",
             "varied": {"use_dora": True}},
            {"name": "upstream-defaults", "point": {"lora_rank": 8, "use_dora": False}, "baseline": True,
             "label": "LLaMA-Factory defaults"}]
    make_experiment(
        root, runs, [{"kind": "vary", "arguments": ["lora_rank"]}, {"kind": "vary", "arguments": ["use_dora"]}]
    )
    for name, right in (("r4", 3), ("r8", 5), ("r4-dora", 2), ("upstream-defaults", 1)):
        make_run(root, telecom_dir, name, right=right, log=_log(range(5, 45, 5)))
    return root


def test_a_vary_sweep_compares_each_run_with_its_base_and_shows_the_base_values(vary_study):
    study = report.gather(vary_study)
    table = report.comparison_table(study).set_index("run")
    assert table.loc["r4", "use_dora"] == "false" and table.loc["r4", "lora_rank"] == 4   # as the spec writes it
    assert str(table.loc["r4", "lora_rank"]) == "4"                                       # 4, not 4.0
    assert table.loc["r8", "compared with"] == "r4" and table.loc["r4-dora", "compared with"] == "r4"
    assert table.loc["r4", "compared with"] == "upstream-defaults"
    delta = report.delta_column("acc", SET)
    assert table.loc["r8", delta] == pytest.approx(20.0) and table.loc["r4-dora", delta] == pytest.approx(-10.0)
    assert table.loc["r4", delta] == pytest.approx(20.0)          # the base against LLaMA-Factory's defaults


def test_every_ab_plot_holds_the_base_point_and_a_labelled_baseline(vary_study, monkeypatch):
    study = report.gather(vary_study)
    figures = _capture(monkeypatch)
    for axis in study.axes:
        assert report.axis_plot(study, axis)
    dora = figures[1].axes[0]
    assert [t.get_text() for t in dora.get_xticklabels()] == ["false (A/B base)", "true"]
    labels = [line.get_label() for line in dora.get_lines()]
    assert f"baseline LLaMA-Factory defaults, {SET}" in labels
    points = [line for line in dora.get_lines() if line.get_label() == SET][0]
    assert list(points.get_ydata()) == [30.0, 20.0] and points.get_linestyle() == "None"
    assert dora.get_ylabel() == "acc (%)" and dora.get_ylim()[0] == 0
    baseline = [line for line in dora.get_lines() if line.get_label().startswith("baseline")][0]
    assert baseline.get_color() == "black" and baseline.get_linestyle() != "-"   # a style no series has
    assert not dora.get_legend() and figures[1].legends                          # the legend is outside the axes


def test_each_series_has_its_own_colour_and_marker_and_categories_are_not_joined(tmp_path, telecom_dir, monkeypatch):
    root = tmp_path / "e"
    runs = [{"name": f"r{rank}-{dora}", "point": {"lora_rank": rank, "use_dora": dora}}
            for rank in (4, 8) for dora in (False, True)]
    make_experiment(root, runs, [{"kind": "grid", "arguments": ["lora_rank"]},
                                 {"kind": "grid", "arguments": ["use_dora"]}])
    for number, run in enumerate(runs):
        make_run(root, telecom_dir, run["name"], right=number + 1, log=_log([5, 10]))
    study = report.gather(root)
    figures = _capture(monkeypatch)
    for axis in study.axes:
        report.axis_plot(study, axis)
    by_rank, by_dora = figures[0].axes[0], figures[1].axes[0]
    lines = [line for line in by_rank.get_lines() if not line.get_label().startswith(("baseline", "best"))]
    assert len(lines) == 2 and len({(line.get_color(), line.get_marker()) for line in lines}) == 2
    assert len({line.get_marker() for line in lines}) == 2            # not colour alone, not dash alone
    assert all(line.get_linestyle() == "-" for line in lines)         # numeric: a curve
    categorical = [line for line in by_dora.get_lines() if not line.get_label().startswith(("baseline", "best"))]
    assert categorical and all(line.get_linestyle() == "None" for line in categorical)   # true/false: no line


def _capture(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(report.plots_module, "_png", lambda figure: figures.append(figure) or b"png")
    return figures


def test_zipped_arguments_are_one_axis_and_one_plot(tmp_path, telecom_dir, monkeypatch):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "a", "point": {"lora_target": "q", "lora_rank": 8, "lora_dropout": 0.1}},
                           {"name": "b", "point": {"lora_target": "qkvo", "lora_rank": 16, "lora_dropout": 0.0}}],
                    [{"kind": "zip", "arguments": ["lora_target", "lora_rank", "lora_dropout"]}])
    make_run(root, telecom_dir, "a", right=1, log=_log([5, 10]))
    make_run(root, telecom_dir, "b", right=4, log=_log([5, 10]))
    study = report.gather(root)
    images = report.plots(study)
    assert sorted(images) == ["loss.png", "metrics_vs_lora_target+lora_rank+lora_dropout.png"]
    figures = _capture(monkeypatch)
    report.axis_plot(study, study.axes[0])
    ticks = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert ticks == ["q / 8 / 0.1", "qkvo / 16 / 0"]


@pytest.fixture(scope="module")
def plain_data(telecom_dir, tmp_path_factory) -> Path:
    """The synthetic data without its recorded best possible score, as a real competition file's split."""
    data = tmp_path_factory.mktemp("plain") / "data"
    shutil.copytree(telecom_dir, data)
    manifest = json.loads((data / "split_manifest.json").read_text(encoding="utf-8"))
    del manifest["ceiling"]
    (data / "split_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return data


def test_a_grid_plots_each_argument_with_the_others_held(tmp_path, plain_data, monkeypatch):
    root = tmp_path / "e"
    points = [{"lora_rank": r, "use_dora": d} for r in (2, 4) for d in (False, True)]
    make_experiment(root, [{"name": f"r{p['lora_rank']}-{p['use_dora']}", "point": p} for p in points],
                    [{"kind": "grid", "arguments": ["lora_rank"]}, {"kind": "grid", "arguments": ["use_dora"]}])
    for i, p in enumerate(points):
        make_run(root, plain_data, f"r{p['lora_rank']}-{p['use_dora']}", right=i, log=_log([5]))
    study = report.gather(root)
    figures = _capture(monkeypatch)
    report.axis_plot(study, study.axes[0])
    labels = sorted(line.get_label() for line in figures[0].axes[0].get_lines())
    assert labels == [f"{SET} (use_dora=false)", f"{SET} (use_dora=true)"]


def test_an_all_zero_metric_has_a_readable_axis(tmp_path, plain_data, monkeypatch):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "a", "point": {"lora_rank": 2}}, {"name": "b", "point": {"lora_rank": 4}}],
                    [{"kind": "grid", "arguments": ["lora_rank"]}])
    make_run(root, plain_data, "a", right=0)
    make_run(root, plain_data, "b", right=0)
    figures = _capture(monkeypatch)
    study = report.gather(root)
    report.axis_plot(study, study.axes[0])
    assert figures[0].axes[0].get_ylim() == (0.0, 5.0)      # not -1.4 .. 0 with a 1e-17 offset


def test_loss_is_plotted_against_epochs_and_the_title_says_who_logged_none(tmp_path, telecom_dir, monkeypatch):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "b8"}, {"name": "b64"}, {"name": "silent"}], [])
    make_run(root, telecom_dir, "b8", log=_log(range(1, 41), epochs_per_step=0.05))   # 40 steps, 2 epochs
    make_run(root, telecom_dir, "b64", log=_log(range(1, 6), epochs_per_step=0.4))    # 5 steps, 2 epochs
    make_run(root, telecom_dir, "silent")
    figures = _capture(monkeypatch)
    report.loss_plot(report.gather(root).records)
    axis = figures[0].axes[0]
    assert axis.get_xlabel() == "epoch"
    assert [max(line.get_xdata()) for line in axis.get_lines()] == [2.0, 2.0]
    assert "2 of 3 runs logged a loss" in axis.get_title() and "silent" in axis.get_title()


def test_a_resumed_run_counts_every_segment_and_each_step_once(tmp_path, telecom_dir):
    """A requeued job re-logs the steps after its checkpoint (LLaMA-Factory appends) and restarts
    its clock; train_results.json covers the last segment only."""
    root = tmp_path / "e"
    make_experiment(root, [{"name": "r"}], [])
    first = _log(range(5, 35, 5))                                   # steps 5..30 in 30 s, killed after 30
    second = _log(range(25, 45, 5), start=-20)                      # resumed from checkpoint-20: steps 25..40
    make_run(root, telecom_dir, "r", log=first + second,
             results={"train_runtime": 16.0, "train_samples_per_second": 1526.0})
    record = report.gather(root).records[0]
    assert [step for _, step, _ in record.losses] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert record.segments == 2
    assert record.row["train_runtime_s"] == pytest.approx(16.0 + 30.0)
    assert record.row["samples_per_s"] == pytest.approx(1526.0 * 16.0 / 46.0, rel=1e-3)
    assert any("trained in 2 segments" in note for note in report.gather(root).notes)


def test_a_failed_run_shows_as_failed_with_its_cause_and_log(tmp_path, telecom_dir):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "ok"}, {"name": "broken"}], [])
    make_run(root, telecom_dir, "ok", right=2)
    make_run(root, telecom_dir, "broken", failed="RuntimeError: CUDA out of memory")
    written = report.write_report(root)
    row = written.table.set_index("run").loc["broken"]
    assert row["state"] == "failed"
    assert "broken failed in train: RuntimeError: CUDA out of memory (log: " in written.terminal
    page = written.html.read_text(encoding="utf-8")
    assert "RuntimeError: CUDA out of memory" in page and "logs/train.log" in page


def test_the_terminal_table_has_units_names_and_no_pandas_dump(vary_study):
    written = report.write_report(vary_study)
    header = written.terminal.splitlines()[0]
    assert header.split()[:3] == ["run", "what", "state"] and f"acc % {SET}" in header
    assert "A/B base" in written.terminal and "LLaMA-Factory defaults" in written.terminal
    assert not any(word in written.terminal for word in ("NaN", "None", "<NA>"))
    markdown = written.markdown.read_text(encoding="utf-8")
    assert f"acc % [{SET}]" in markdown and "percentage points" in markdown


def test_a_single_run_report_announces_no_comparison(tmp_path, telecom_dir):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "only"}], [])
    make_run(root, telecom_dir, "only", right=3)
    written = report.write_report(root)
    assert not any(c.startswith("Δ") or c == "compared with" for c in written.table.columns)
    assert "Δ" not in written.markdown.read_text(encoding="utf-8")


def test_a_run_that_repeats_one_answer_is_explained(tmp_path, telecom_dir):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "parrot", "label": "blog configuration"}], [])
    instruction = json.loads((telecom_dir / f"{SET}.json").read_text())[0]["instruction"]
    make_run(root, telecom_dir, "parrot", answer=instruction[:12])
    notes = report.gather(root).notes
    assert any(n.startswith("parrot (blog configuration) answers every question of telecom_test_100 with the "
                            "instruction's own text") for n in notes), notes


def test_the_page_holds_each_question_with_every_runs_answer(vary_study):
    written = report.write_report(vary_study)
    page = written.html.read_text(encoding="utf-8")
    blob = page.split('<script type="application/json" id="report-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(blob)
    rows = data["questions"][SET]
    assert len(rows) == 10 and [r["answers"][1][1] for r in rows[:6]] == [True] * 5 + [False]
    first = json.loads((vary_study / "r4" / rundir.DATASETS_FILE).read_text())
    assert rows[0]["question"] and rows[0]["category"] and first
    assert [r["title"] for r in data["runs"]] == ["r4 (A/B base)", "r8", "r4-dora",
                                                  "upstream-defaults (LLaMA-Factory defaults)"]
    links = dict(data["runs"][0]["links"])
    assert links["directory"] == "../r4/" and links["scores.json"] == "../r4/scores.json"
    assert "train.yaml" not in links            # only files that exist are linked
    assert "http://" not in page and "https://" not in page and "<link" not in page   # self-contained


def test_hostile_answers_stay_text_in_the_page(tmp_path, telecom_dir):
    root = tmp_path / "e"
    make_experiment(root, [{"name": "x"}], [])
    make_run(root, telecom_dir, "x", answer="</script><script>alert(1)</script><img src=x onerror=alert(2)>")
    page = report.write_report(root).html.read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "<img src=x" not in page and "\\u003c/script\\u003e" in page


def test_an_old_experiment_record_without_axes_still_reports(tmp_path, telecom_dir):
    root = tmp_path / "e"
    root.mkdir()
    (root / rundir.EXPERIMENT).write_text(
        json.dumps(
            {
                "experiment": "e",
                "spec": "s",
                "predict_sets": [SET],
                "runs": [
                    {"name": "r2", "varied": {"lora_rank": 2}, "baseline": False},
                    {"name": "r4", "varied": {"lora_rank": 4}, "baseline": False},
                ],
            }
        )
    )
    make_run(root, telecom_dir, "r2", right=1)
    make_run(root, telecom_dir, "r4", right=2)
    written = report.write_report(root)
    assert (written.directory / "metrics_vs_lora_rank.png").exists()


# ---------------------------------------------------------------- in a real browser

@pytest.fixture
def browser_page(tmp_path):
    import os

    from browser import Page, chromium

    if chromium() is None:
        if os.environ.get("TLF_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on PATH; ./dev.sh test installs Debian's chromium package")
        pytest.skip("no chromium on PATH (./dev.sh test installs it)")
    pages = []

    def open_page(path: Path, **size) -> Page:
        pages.append(Page(path.as_uri(), tmp_path / f"profile{len(pages)}", **size))
        return pages[-1]

    yield open_page
    for page in pages:
        page.close()


def test_the_page_in_chromium_sorts_filters_and_shows_no_error(vary_study, browser_page, tmp_path):
    written = report.write_report(vary_study)
    page = browser_page(written.html)
    assert page.evaluate("document.body.dataset.ready") == "1"
    runs = "Array.from(document.querySelectorAll('#comparison tbody tr')).map(r => r.cells[0].textContent)"
    assert page.evaluate(runs) == ["r4", "r8", "r4-dora", "upstream-defaults"]     # one row per run
    column = report.comparison_table(report.gather(vary_study)).columns.get_loc(report.metric_column("acc", SET))
    page.click(f"#comparison th[data-index='{column}']")                            # a real click: best first
    assert page.evaluate(runs) == ["r8", "r4", "r4-dora", "upstream-defaults"]
    page.click(f"#comparison th[data-index='{column}']")                            # again: ascending
    assert page.evaluate(runs) == ["upstream-defaults", "r4-dora", "r4", "r8"]
    assert page.evaluate("document.querySelectorAll('#comparison td.best').length") >= 1
    shown = "document.querySelectorAll('#questions tbody tr').length"
    assert page.evaluate(shown) == 10
    # right in r8 (5 rows), wrong in r4 (7 rows): rows 4 and 5
    page.evaluate("""(() => { const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                      e.dispatchEvent(new Event('change')); };
                      set('f-a', '1'); set('f-a-is', 'right'); set('f-b', '0'); set('f-b-is', 'wrong'); })()""")
    assert page.evaluate(shown) == 2
    assert page.evaluate("document.getElementById('f-count').textContent") == "2 of 10 rows"
    assert page.evaluate(
        "Array.from(document.querySelectorAll('#questions tbody tr')).map(r => r.cells[0].textContent)"
    ) == ["4", "5"]
    page.click("#f-long")                                                            # long answers only
    labels = [q["label"] for q in report.gather(vary_study).questions[SET][3:5]]
    assert page.evaluate(shown) == sum(len(label.strip()) > 10 for label in labels)
    assert page.evaluate("document.querySelectorAll('#plots img').length") == 3
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.settle()
    assert page.errors == []


def test_the_best_possible_score_the_data_records_is_noted_and_drawn(tmp_path, telecom_dir, plain_data, monkeypatch):
    """Synthetic data records per subset the share of answers that follow from their question
    (the ceiling of exact match); the report says it and draws it on the acc plot. Data without
    that record (a real competition file) gets neither."""
    for data, expected in ((telecom_dir, 100.0), (plain_data, None)):
        root = tmp_path / f"e-{data.parent.name}"
        make_experiment(root, [{"name": "a", "point": {"lora_rank": 2}}, {"name": "b", "point": {"lora_rank": 4}}],
                        [{"kind": "grid", "arguments": ["lora_rank"]}])
        make_run(root, data, "a", right=1)
        make_run(root, data, "b", right=3)
        study = report.gather(root)
        figures = _capture(monkeypatch)
        report.axis_plot(study, study.axes[0])
        lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
        noted = [n for n in study.notes if n.startswith("best possible acc")]
        if expected is None:
            assert not noted and f"best possible, {SET}" not in lines
            continue
        assert noted == [f"best possible acc on {SET}: 100 % ({data_mod.CEILING_WHY})"], study.notes
        assert list(lines[f"best possible, {SET}"].get_ydata()) == [expected, expected]
        assert figures[0].axes[0].get_ylim()[1] >= expected


@pytest.mark.parametrize("entry", [{"acc": "100"}, {"acc": float("nan")}, {"acc": 1e308}, {"acc": -5}, {"acc": True},
                                   [100], "100", {"why": "no acc"}])
def test_a_hand_edited_best_possible_score_that_is_no_percentage_is_ignored(tmp_path, plain_data, entry):
    data = tmp_path / "data"
    shutil.copytree(plain_data, data)
    manifest = json.loads((data / "split_manifest.json").read_text(encoding="utf-8"))
    manifest["ceiling"] = {SET: entry}
    (data / "split_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    root = tmp_path / "e"
    make_experiment(root, [{"name": "a"}], [])
    make_run(root, data, "a", right=1)
    assert report.gather(root).ceiling == {}
    assert not any(n.startswith("best possible") for n in report.write_report(root).terminal.splitlines())


def test_a_best_possible_reason_is_one_short_line(tmp_path, plain_data):
    data = tmp_path / "data"
    shutil.copytree(plain_data, data)
    manifest = json.loads((data / "split_manifest.json").read_text(encoding="utf-8"))
    manifest["ceiling"] = {SET: {"acc": 40, "why": "line one\n$(rm -rf ~) ../../x\r" + "y" * 1_000_000}}
    (data / "split_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    root = tmp_path / "e"
    make_experiment(root, [{"name": "a"}], [])
    make_run(root, data, "a", right=1)
    [note] = [n for n in report.gather(root).notes if n.startswith("best possible")]
    assert note.startswith(f"best possible acc on {SET}: 40 % (line one $(rm -rf ~) ../../x y")
    assert "\n" not in note and "\r" not in note and len(note) < 400


# ---------------------------------------------------------------- verdicts: tests, ties, loss flags


def test_each_delta_carries_its_interval_and_p_and_ten_questions_decide_nothing(vary_study):
    """10 questions: r8's +20 points over its base is 2 discordant questions, not a finding."""
    study = report.gather(vary_study)
    table = report.comparison_table(study).set_index("run")
    interval, p = report.interval_column("acc", SET), report.p_column("acc", SET)
    low, high = (float(v) for v in table.loc["r8", interval].strip("[]").split(","))
    assert low <= 0 <= high and low < 20 < high
    assert 0.05 <= table.loc["r8", p] <= 1
    assert report.p_column("rouge-1", SET) in table.columns
    terminal = report.write_report(vary_study).terminal
    assert "Δacc" in terminal and "+20.0 " in terminal + " " and "*" not in terminal.split("\nΔacc:")[0]
    notes = " ".join(study.notes)
    assert "Holm-adjusted" in notes and "3 such comparisons" in notes
    assert "tie within noise" in notes and "No best run" in notes
    csv = (vary_study / "report" / "report.csv").read_text(encoding="utf-8")
    assert interval in csv and p in csv


def _sweep(root: Path, data: Path, rights: dict[str, int], logs: dict | None = None) -> Path:
    runs = [{"name": name, "point": {"lora_rank": rank}} for rank, name in enumerate(rights, start=1)]
    make_experiment(root, runs, [{"kind": "grid", "arguments": ["lora_rank"]}])
    for name, right in rights.items():
        make_run(root, data, name, right=right, rows=100, log=(logs or {}).get(name, _log(range(5, 45, 5))))
    return root


def test_the_best_run_is_named_only_when_it_is_distinguishable_from_every_other(tmp_path, telecom_dir):
    study = report.gather(_sweep(tmp_path / "e", telecom_dir, {"good": 90, "mid": 40, "poor": 10}))
    [best] = [n for n in study.notes if n.startswith("Best run")]
    assert f"Best run on {SET} by exact match: good at 90.0 %" in best and "mid at 40.0 %" in best
    assert "Holm-adjusted over 2 comparisons" in best


def test_runs_that_all_score_zero_tie_and_no_best_run_is_named(tmp_path, telecom_dir):
    study = report.gather(_sweep(tmp_path / "e", telecom_dir, {"a": 0, "b": 0, "c": 1}))
    assert not any(n.startswith("Best run") for n in study.notes)
    [tie] = [n for n in study.notes if n.startswith("No best run")]
    assert "c (1.0 %), a (0.0 %), b (0.0 %)" in tie


def _flat(loss: float, steps=range(5, 45, 5)):
    return [{**entry, "loss": loss} for entry in _log(steps)]


def test_a_healthy_sweep_has_no_loss_flag(tmp_path, telecom_dir):
    logs = {"a": _log(range(5, 45, 5)), "b": _log(range(5, 45, 5), loss=2.2), "c": _log(range(5, 45, 5), loss=1.9)}
    study = report.gather(_sweep(tmp_path / "e", telecom_dir, {"a": 50, "b": 40, "c": 45}, logs))
    assert not any(r.flags for r in study.records)
    assert "loss flags" not in report.comparison_table(study).columns
    assert "!" not in report.terminal_table(study)


def test_a_stalled_a_diverged_and_a_far_above_run_are_flagged_with_their_numbers(tmp_path, telecom_dir):
    learning = [{**e, "loss": 2.0 * 0.7 ** i} for i, e in enumerate(_log(range(5, 45, 5)))]
    logs = {"ok1": learning, "ok2": learning, "stalled": _flat(1.49),
            "nan": [*learning[:3], *({**e, "loss": float("nan")} for e in learning[3:])]}
    study = report.gather(_sweep(tmp_path / "e", telecom_dir, {"ok1": 60, "ok2": 55, "stalled": 1, "nan": 0}, logs))
    flags = {r.name: r.flags for r in study.records}
    assert not flags["ok1"] and not flags["ok2"]
    assert any(f.startswith("stalled: loss 1.49 at the start") for f in flags["stalled"])
    assert any(f.startswith("far above the others: final loss 1.49") for f in flags["stalled"])
    assert flags["nan"] == ["diverged: loss is NaN or infinite from step 20 (5 logged step(s))"]
    table = report.comparison_table(study).set_index("run")
    assert table.loc["stalled", "loss flags"] == "stalled; far above the others"
    assert any(n.startswith("stalled: stalled: loss") or "stalled: stalled" in n for n in study.notes)
    assert "!" in report.terminal_table(study)


def test_replicas_are_aggregated_per_configuration_and_compared_on_every_replica(tmp_path, telecom_dir):
    """seeds: [42, 7]: two configurations x two seeds; the report shows mean ± sd (min–max) per
    configuration, compares r8 with r4 pooled over seeds, and plots the spread."""
    root = tmp_path / "e"
    runs = [{"name": f"{config}-s{seed}", "point": {"lora_rank": rank}, "seed": seed, "config": config,
             **({"reference": f"r4-s{seed}", "varied": {"lora_rank": 8}} if config == "r8" else {})}
            for config, rank in (("r4", 4), ("r8", 8)) for seed in (42, 7)]
    runs += [{"name": f"upstream-defaults-s{seed}", "point": {"lora_rank": 8}, "seed": seed, "baseline": True,
              "config": "upstream-defaults"} for seed in (42, 7)]
    make_experiment(root, runs, [{"kind": "vary", "arguments": ["lora_rank"]}])
    for name, right in (("r4-s42", 30), ("r4-s7", 34), ("r8-s42", 80), ("r8-s7", 86), ("upstream-defaults-s42", 0),
                        ("upstream-defaults-s7", 1)):
        make_run(root, telecom_dir, name, right=right, rows=100, log=_log(range(5, 45, 5)))
    written = report.write_report(root)
    study = report.gather(root)
    references = {r.name: r.reference for r in study.records}
    assert references["r4-s7"] == "upstream-defaults-s7" and references["r4-s42"] == "upstream-defaults-s42"
    assert references["upstream-defaults-s7"] is None and references["r8-s7"] == "r4-s7"
    assert [c.name for c in study.configs] == ["r4", "r8", "upstream-defaults"]
    by_config = (root / "report" / "report_by_config.csv").read_text(encoding="utf-8")
    assert "32.0 ± 2.8" in by_config and "30.0–34.0" in by_config and "83.0 ± 4.2" in by_config
    [r8] = [c for c in study.configs if c.name == "r8"]
    tested = r8.comparisons[SET]
    assert tested["diff"] == pytest.approx(51.0) and tested["p_value"] < 0.01 and tested["replicas"] == [2, 2]
    assert "by configuration (mean ± sd over seeds)" in written.terminal and "+51.0*" in written.terminal
    assert any(n.startswith("Replicas: each configuration ran 2 times") for n in study.notes)
    assert any(n.startswith(f"Best configuration on {SET}") and "r8 ×2" in n for n in study.notes)
    assert (root / "report" / "replicas.png").exists()
    page = written.html.read_text(encoding="utf-8")
    assert "By configuration (mean ± sd over seeds)" in page and "83.0 ± 4.2" in page


@pytest.fixture
def wide_study(tmp_path, telecom_dir):
    """The blog's tune sweep as wide as it gets: six swept arguments, an A/B base and the baseline."""
    root = tmp_path / "wide"
    base = {"lora_rank": 8, "lora_alpha": 16, "lora_target": "all", "lora_dropout": 0.0, "use_rslora": False,
            "use_dora": False}
    runs = [{"name": "r8-a16-all", "point": base, "label": "A/B base"}]
    for key, value in (("lora_rank", 256), ("lora_alpha", 512), ("lora_target", "q_proj,k_proj,v_proj,o_proj"),
                       ("lora_dropout", 0.1), ("use_rslora", True), ("use_dora", True)):
        runs.append({"name": f"{key}-{value}"[:40].replace(",", "_"), "point": {**base, key: value},
                     "reference": "r8-a16-all", "varied": {key: value}})
    runs.append({"name": "upstream-defaults", "point": base, "baseline": True, "label": "LLaMA-Factory defaults"})
    make_experiment(root, runs, [{"kind": "vary", "arguments": [key]} for key in base])
    for number, run in enumerate(runs):
        make_run(root, telecom_dir, run["name"], right=number % 7, log=_log(range(5, 45, 5)))
    return root


@pytest.mark.parametrize("width", [1400, 900])
def test_the_test_sets_accuracy_is_in_view_and_the_run_column_stays(wide_study, browser_page, tmp_path, width):
    """At 1400 px the first accuracy column (the test set's) is visible without scrolling; at any
    width, scrolling the table sideways keeps the run names in view (a sticky first column)."""
    written = report.write_report(wide_study)
    page = browser_page(written.html, width=width)
    assert page.evaluate("document.body.dataset.ready") == "1"
    header = report.metric_column("acc", SET)
    right = page.evaluate(f"""(() => {{ const th = Array.from(document.querySelectorAll('#comparison th'))
        .find(t => t.textContent === {json.dumps(header)}); return th.getBoundingClientRect().right; }})()""")
    if width == 1400:
        assert right <= page.evaluate("document.documentElement.clientWidth"), right
    page.evaluate("document.querySelector('#comparison').parentElement.scrollLeft = 100000")
    page.settle()
    left = page.evaluate("""(() => { const box = document.querySelector('#comparison').parentElement
        .getBoundingClientRect().left; const cell = document.querySelector('#comparison tbody td');
        return cell.getBoundingClientRect().left - box; })()""")
    assert -1 <= left <= 1, left                  # the run column did not scroll away
    page.screenshot(tmp_path / f"wide-{width}.png", full_page=False)
    assert page.errors == []
