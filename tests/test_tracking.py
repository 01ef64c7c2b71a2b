"""#32: `tracking: mlflow | tensorboard`: a sweep as one MLflow experiment (SQLite store under the
experiment directory), one MLflow run per tlf run holding LLaMA-Factory's losses and tlf's scores;
TensorBoard as one log directory with a subdirectory per run. Read back through mlflow's own client
and TensorBoard's own event reader, after the real LLaMA-Factory trained into them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import BIN, spec_file, tlf_bin

from telecom_lf import rundir, tracking
from telecom_lf.errors import TlfError

SETS = ("telecom_test_100", "telecom_train_100")
SWEEP = ("decoding: greedy\nsweep:\n  vary: {use_dora: [true], lora_rank: [8]}\n"
         "select: {on: telecom_dev_200, every: 5}\n")
RUNS = ("sweep", "dora", "r8")

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: ./dev.sh test installs it")


def tlf(*args, check=True, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def tlf_runs(client, experiment_id: str) -> dict:
    """The experiment's MLflow runs of tlf runs (not the report's), by name."""
    found = client.search_runs([experiment_id], filter_string="tags.`tlf.run` != ''", max_results=1000)
    return {run.info.run_name: run for run in found}


@pytest.fixture(scope="module")
def tracked_sweep(tiny_gemma, telecom_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow")
    spec = spec_file(base / "sweep.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n" + SWEEP, sets=SETS)
    done = tlf("run", spec, "--out", base / "runs")
    return spec, base / "runs" / "sweep", done.stdout


@pytest.mark.integration
def test_a_tracked_sweep_is_one_experiment_with_a_run_per_tlf_run_holding_losses_and_scores(tracked_sweep):
    spec, root, stdout = tracked_sweep
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("sweep")
    assert experiment is not None and experiment.artifact_location == (root / "mlartifacts").as_uri()
    runs = tlf_runs(client, experiment.experiment_id)
    assert set(runs) == set(RUNS)
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        recorded = json.loads((root / name / tracking.RUN_ID_FILE).read_text())
        assert recorded["run_id"] == run.info.run_id
        losses = client.get_metric_history(run.info.run_id, "loss")      # LLaMA-Factory's callback
        trainer_log = [json.loads(line) for line in (root / name / "train" / rundir.TRAINER_LOG).read_text()
                       .splitlines() if "loss" in json.loads(line)]
        assert [m.step for m in losses] == [row["current_steps"] for row in trainer_log]
        assert [round(m.value, 4) for m in losses] == [round(row["loss"], 4) for row in trainer_log]
        scores = json.loads((root / name / rundir.SCORES).read_text())["sets"]
        for dataset in SETS:                                           # tlf's score step
            assert run.data.metrics[f"acc_{dataset}"] == scores[dataset]["acc"]
            assert run.data.metrics[f"item_f1_{dataset}"] == scores[dataset]["item_f1"]
        selection = json.loads((root / name / rundir.SELECTION).read_text())   # the checkpoint selection
        series = client.get_metric_history(run.info.run_id, "select_acc_telecom_dev_200")
        assert [(m.step, m.value) for m in series] == [(c["step"], c["acc"]) for c in selection["checkpoints"]]
        assert len(series) >= 2 and run.data.metrics["selected_step"] == selection["chosen"]["step"]
        assert run.data.params["tlf.selected_checkpoint"] == f"checkpoint-{selection['chosen']['step']}"
        assert run.data.params["lf.lora_rank"] == ("8" if name == "r8" else "4")   # the rendered train.yaml
        assert run.data.params["learning_rate"]                            # and the trainer's own arguments
        tags = run.data.tags
        assert tags["tlf.run"] == name and tags["version.llamafactory"] == "0.9.5"
        assert tags["tlf.spec_sha256"] == json.loads((root / name / rundir.MANIFEST).read_text())["spec_sha256"]
        assert tags["arg.use_dora"] == ("true" if name == "dora" else "false")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"scores.json", "scores.txt", "report_row.json", "selection.json"} <= artifacts
    assert runs["dora"].data.tags["tlf.verdict"].startswith("vs sweep: Δacc [telecom_test_100]")
    assert "tlf.verdict" not in runs["sweep"].data.tags                 # the A/B base is compared with nothing
    report = client.search_runs([experiment.experiment_id], filter_string="tags.`tlf.report` = 'yes'")
    assert len(report) == 1 and report[0].info.run_name == "report"
    assert {"report.html", "report.md", "report.csv"} <= {a.path for a in client.list_artifacts(report[0].info.run_id)}
    assert f"mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db --host 127.0.0.1" in stdout
    printed = tlf("report", spec, "--out", root.parent).stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db --host 127.0.0.1" in printed
    again = client.search_runs([experiment.experiment_id], filter_string="tags.`tlf.report` = 'yes'")
    assert len(again) == 1                                             # the report run is reused, not repeated


@pytest.mark.integration
def test_a_resumed_train_step_logs_into_the_same_mlflow_run(tracked_sweep):
    """A requeued train step resumes from its checkpoint: it must reattach to the run (not start a
    second one) and go on logging losses, and leave the first attempt's parameters as they were."""
    _spec, root, _stdout = tracked_sweep
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    run_id = json.loads((root / "r8" / tracking.RUN_ID_FILE).read_text())["run_id"]
    before = client.get_metric_history(run_id, "loss")
    params = client.get_run(run_id).data.params
    done = subprocess.run([str(BIN / "tlf-lf"), "train", str(root / "r8" / rundir.TRAIN_FILE), "num_train_epochs=2"],
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "Resuming training from" in done.stdout + done.stderr
    after = client.get_metric_history(run_id, "loss")
    assert len(after) > len(before) and max(m.step for m in after) > max(m.step for m in before)
    assert client.get_run(run_id).data.params == params
    experiment = client.get_experiment_by_name("sweep")
    assert set(tlf_runs(client, experiment.experiment_id)) == set(RUNS)   # no second run for r8


@pytest.mark.integration
def test_tensorboard_is_one_log_directory_with_losses_and_scores_per_run(tiny_gemma, telecom_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = spec_file(tmp_path / "tb.yaml", tiny_gemma, telecom_dir, extra="tracking: tensorboard\n"
                     "sweep: {vary: {lora_rank: [8]}}\n", sets=SETS)
    stdout = tlf("run", spec, "--out", tmp_path / "runs").stdout
    root = tmp_path / "runs" / "tb"
    assert sorted(p.name for p in (root / "tensorboard").iterdir()) == ["r8", "tb"]
    for name in ("tb", "r8"):
        events = EventAccumulator(str(root / "tensorboard" / name))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert "train/loss" in scalars, scalars
        scores = json.loads((root / name / rundir.SCORES).read_text())["sets"]
        for dataset in SETS:
            assert events.Scalars(f"tlf/acc_{dataset}")[-1].value == pytest.approx(scores[dataset]["acc"])
    assert f"tensorboard --logdir {root / 'tensorboard'} --host 127.0.0.1" in stdout


def _create_and_log(args) -> str:
    """One array task's share of the store: its MLflow run, created under tlf's lock, and 40 metric
    batches logged with no lock (SQLite's own)."""
    run_dir, tracked = args
    identifier, _params = tracking.run_id(Path(run_dir), tracked)
    client = mlflow.MlflowClient(tracked.uri)
    for step in range(40):
        client.log_metric(identifier, "loss", 1.0 / (step + 1), step=step)
    return identifier


@pytest.mark.unit
def test_parallel_processes_on_one_new_sqlite_store_lose_no_run_and_no_point(tmp_path):
    """What array tasks do at once, on a store no process created before: 8 processes at the same time."""
    root = tmp_path / "exp"
    tasks = []
    for index in range(8):
        run_dir = root / f"run{index}"
        run_dir.mkdir(parents=True)
        tasks.append((str(run_dir), tracking.plan("mlflow", None, "parallel", root, f"run{index}")))
    with ProcessPoolExecutor(8) as pool:
        ids = list(pool.map(_create_and_log, tasks))
    client = mlflow.MlflowClient(tracking.default_uri(root))
    experiment = client.get_experiment_by_name("parallel")
    runs = client.search_runs([experiment.experiment_id])
    assert len(set(ids)) == 8 and {r.info.run_id for r in runs} == set(ids)
    assert all(len(client.get_metric_history(i, "loss")) == 40 for i in ids)


@pytest.mark.unit
def test_tracking_keys_are_checked_where_they_are_written(tiny_gemma, telecom_dir, tmp_path):
    cases = {
        "tracking: wandb\n": "tracking: expected one of ['none', 'mlflow', 'tensorboard'], got 'wandb'",
        "tracking: tensorboard\ntracking_uri: http://h:5000\n": "tracking_uri: tracking_uri is where tracking: "
                                                                  "mlflow logs",
        "tracking: mlflow\ntracking_uri: not a uri\n": "tracking_uri: expected a URI",
        'tracking: mlflow\ntracking_uri: "http://h:1/\\nx"\n': "tracking_uri",
        "tracking: mlflow\ntracking_uri: sqlite:///mlflow.db\n": "is a relative path: every job would read it",
    }
    for extra, expected in cases.items():
        spec = spec_file(tmp_path / "bad.yaml", tiny_gemma, telecom_dir, extra=extra)
        done = tlf("render", spec, "--out", tmp_path / "runs", check=False)
        assert done.returncode != 0 and expected in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()
    spec = spec_file(tmp_path / "ok.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n")
    done = tlf("render", spec, "--out", tmp_path / "my runs", check=False)   # a sqlite:/// URI cannot hold it
    assert done.returncode != 0 and "holds '?', '#', '%' or a space" in done.stderr and "tracking_uri" in done.stderr
    assert not (tmp_path / "my runs").exists()
    spec = spec_file(tmp_path / "mine.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n",
                     train=", report_to: wandb")
    done = tlf("render", spec, "--out", tmp_path / "runs", check=False)
    assert done.returncode != 0 and "train.report_to: tracking: mlflow sets report_to itself" in done.stderr


@pytest.mark.unit
def test_render_writes_the_tracker_into_the_train_config_and_tracking_json(tiny_gemma, telecom_dir, tmp_path):
    import yaml

    spec = spec_file(tmp_path / "t.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n")
    tlf("render", spec, "--out", tmp_path / "runs")
    run = tmp_path / "runs" / "t" / "t"
    config = yaml.safe_load((run / rundir.TRAIN_FILE).read_text())
    assert config["report_to"] == "mlflow" and config["run_name"] == "t"
    assert rundir.header_marker(str(run / rundir.TRAIN_FILE), tracking.HEADER_KEY) == "mlflow"
    assert yaml.safe_load((run / rundir.predict_file("telecom_test_100")).read_text())["report_to"] == "none"
    tracked = tracking.read(run)
    assert tracked.uri == f"sqlite:///{tmp_path / 'runs' / 't'}/mlflow.db" and tracked.run == "t"
    assert tracking.read(run.parent).run is None
    blob = (run / tracking.TRACKING_FILE).read_bytes()
    tlf("render", spec, "--out", tmp_path / "runs")
    assert (run / tracking.TRACKING_FILE).read_bytes() == blob                    # pure: the same bytes
    assert not (run.parent / tracking.STORE).exists()                            # render touches no store
    site = spec_file(tmp_path / "site.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n"
                     "slurm: {tracking_uri: 'http://mlflow.example:5000'}\n")
    tlf("render", site, "--out", tmp_path / "runs")
    assert tracking.read(tmp_path / "runs" / "site" / "site").uri == "http://mlflow.example:5000"


@pytest.mark.unit
def test_without_mlflow_tracking_is_refused_at_render_with_the_install_command(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "t.yaml", tiny_gemma, telecom_dir, extra="tracking: mlflow\n")
    hide = "import sys; sys.modules['mlflow'] = None; from telecom_lf.cli import main; sys.argv[0] = 'tlf'; main()"
    done = subprocess.run([sys.executable, "-c", hide, "render", str(spec), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, env={**os.environ})
    assert done.returncode != 0
    assert "tracking: mlflow needs mlflow, which is not installed here: pip install -e '.[tracking]'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_the_printed_mlflow_ui_shows_every_run_and_its_acc_in_chromium(tracked_sweep, tmp_path):
    """`tlf run` prints the command that opens the tracker; run it (on a free port), open the
    experiment in headless Chromium, find every tlf run in its runs table and a run's acc metric."""
    import shlex
    import socket
    import time
    import urllib.request

    from browser import Page, chromium

    if chromium() is None:
        if os.environ.get("TLF_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on PATH; ./dev.sh test installs Debian's chromium package")
        pytest.skip("no chromium on PATH (./dev.sh test installs it)")
    _spec, root, stdout = tracked_sweep
    command = next(line.split("tracker: ", 1)[1] for line in stdout.splitlines() if line.startswith("tracker: "))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = shlex.split(command.replace("--port 5000", f"--port {port}"))
    server = subprocess.Popen([str(BIN / argv[0]), *argv[1:], "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    page = None
    try:
        end = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < end, "mlflow ui did not come up"
                time.sleep(0.5)
        experiment = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db").get_experiment_by_name("sweep").experiment_id
        page = Page(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs", tmp_path / "profile")
        text = _wait_for_text(page, [*RUNS, "report"])
        assert "Training runs" in text
        run_id = json.loads((root / "dora" / tracking.RUN_ID_FILE).read_text())["run_id"]
        page.evaluate(f"location.hash = '#/experiments/{experiment}/runs/{run_id}'")
        text = _wait_for_text(page, ["acc_telecom_test_100", "acc_telecom_train_100", "loss"])
        page.screenshot(tmp_path / "mlflow-run.png", full_page=False)
    finally:
        if page is not None:
            page.close()
        server.terminate()
        server.wait(timeout=30)


def _wait_for_text(page, words: list[str], timeout: float = 90) -> str:
    import time

    end = time.monotonic() + timeout
    while True:
        text = page.evaluate("document.body.innerText")
        missing = [word for word in words if word not in text]
        if not missing:
            return text
        assert time.monotonic() < end, f"{missing} not on the page after {timeout} s:\n{text[:2000]}"
        time.sleep(0.5)


@pytest.mark.unit
def test_a_shared_store_refuses_a_second_experiment_directory_of_the_same_name(tmp_path):
    """Two --out directories of one spec name on one tracking_uri would mix their same-named runs."""
    store = f"sqlite:///{tmp_path}/shared.db"
    first = tracking.plan("mlflow", store, "tune", tmp_path / "a" / "tune")
    assert tracking.prepare_store(first) == tracking.prepare_store(first)          # the same one again: fine
    second = tracking.plan("mlflow", store, "tune", tmp_path / "b" / "tune")
    with pytest.raises(TlfError, match=r"holds the runs of .*/a/tune, not of .*/b/tune; give this spec another name"):
        tracking.prepare_store(second)


@pytest.mark.unit
def test_a_hostile_tracking_uri_is_kept_verbatim_and_never_reaches_a_shell_unquoted(tiny_gemma, telecom_dir, tmp_path):
    import shlex

    uri = "http://h:5000/$(touch${IFS}x)`id`;rm"
    spec = spec_file(tmp_path / "h.yaml", tiny_gemma, telecom_dir, extra=f"tracking: mlflow\ntracking_uri: '{uri}'\n")
    tlf("render", spec, "--out", tmp_path / "runs")
    root = tmp_path / "runs" / "h"
    assert tracking.read(root / "h").uri == uri
    assert shlex.split(tracking.ui_command(root))[:3] == ["mlflow", "ui", "--backend-store-uri"]
    assert shlex.split(tracking.ui_command(root))[3] == uri
    assert all(uri not in p.read_text() for p in root.rglob("*.sbatch"))     # no job script carries it
    assert not (tmp_path / "x").exists() and not (root / "x").exists()
