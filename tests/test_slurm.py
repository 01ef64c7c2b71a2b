"""``tlf submit`` against the real local Slurm (slurm/start-slurm.sh): chains, arrays,
failures, requeue, --test-only, multi-node, and quoting of hostile values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Terminal, patience, spec_file, tlf_bin

pytestmark = pytest.mark.slurm
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


@pytest.fixture(scope="module", autouse=True)
def slurm():
    ok = shutil.which("sbatch") and os.environ.get("SLURM_CONF") and subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP")
    if not ok:
        message = "no Slurm: run slurm/start-slurm.sh and source /tmp/tlf-slurm/env.sh (./dev.sh test does)"
        if os.environ.get("TLF_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


def tlf(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    for token in out.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return "UNKNOWN"


def reason(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next((t for t in out.split() if t.startswith("Reason=")), "")


def wait_final(jobs: list[str], timeout: float = 600) -> dict[str, str]:
    timeout = patience(timeout)
    end = time.monotonic() + timeout
    while True:
        states = {j: state(j) for j in jobs}
        if all(s in FINAL for s in states.values()):
            return states
        if time.monotonic() > end:
            raise AssertionError(f"jobs not finished after {timeout} s: {states}")
        time.sleep(1)


def last_submission(root: Path) -> dict:
    return json.loads((root / "jobs.json").read_text())[-1]


def test_chain_train_predict_twice_score_then_report(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "chain.yaml", tiny_gemma, telecom_dir, sets=("telecom_test_100", "telecom_train_100"))
    started = time.monotonic()
    tlf("submit", spec, "--out", tmp_path / "runs")
    assert time.monotonic() - started < 30, "submit must return at once"
    root = tmp_path / "runs" / "chain"
    record = last_submission(root)
    ids = record["runs"]["chain"]
    assert set(ids) == {"train", "predict-telecom_test_100", "predict-telecom_train_100", "score"}
    assert state(ids["score"]) == "PENDING"  # returned before the chain finished
    states = wait_final([*ids.values(), record["report"]])
    assert set(states.values()) == {"COMPLETED"}, states
    scores = json.loads((root / "chain" / "scores.json").read_text())
    assert set(scores["sets"]) == {"telecom_test_100", "telecom_train_100"}
    assert (root / "report" / "report.md").exists()
    records = [json.loads(p.read_text()) for p in (root / "chain" / "environment").glob("train-*.json")]
    assert records and records[0]["slurm"]["SLURM_JOB_ID"] == ids["train"]
    assert records[0]["visible_devices"] == {"HIP_VISIBLE_DEVICES": "0"}  # emulated from the dcu:1 grant
    status = tlf("status", spec, "--out", tmp_path / "runs").stdout
    assert "train:done" in status and "score:done" in status and f"score={ids['score']}:COMPLETED" in status


def test_sweep_is_one_throttled_array_and_one_report(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "sweep.yaml", tiny_gemma, telecom_dir,
                     extra="sweep: {grid: {lora_rank: [1, 2, 3, 4]}}\n")
    tlf("submit", spec, "--out", tmp_path / "runs")
    root = tmp_path / "runs" / "sweep"
    assert "#SBATCH --array=0-3%2" in (root / "array.sbatch").read_text()
    record = last_submission(root)
    array, report = record["array"], record["report"]
    most = 0
    end = time.monotonic() + 900
    while state(report) not in FINAL:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-t", "RUNNING", "-o", "%i"],
                             capture_output=True, text=True).stdout.split()
        most = max(most, len(out))
        assert time.monotonic() < end, "sweep did not finish"
        time.sleep(0.5)
    assert state(report) == "COMPLETED"
    assert 1 <= most <= 2, f"{most} array tasks ran at once; %2 allows 2"
    for rank in (1, 2, 3, 4):
        assert (root / f"r{rank}" / "scores.json").exists()
    table = (root / "report" / "report.md").read_text()
    assert all(f"| r{rank} | done |" in table for rank in (1, 2, 3, 4))


def test_failed_train_cancels_its_predict_and_score(telecom_dir, tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    spec = spec_file(tmp_path / "fail.yaml", broken, telecom_dir)
    tlf("submit", spec, "--out", tmp_path / "runs")
    ids = last_submission(tmp_path / "runs" / "fail")["runs"]["fail"]
    by_id = wait_final(list(ids.values()), timeout=300)
    states = {step: by_id[job] for step, job in ids.items()}
    assert states["train"] == "FAILED"
    # Slurm would keep these PENDING (DependencyNeverSatisfied) forever without --kill-on-invalid-dep.
    assert states["predict-telecom_test_100"] == "CANCELLED" and states["score"] == "CANCELLED", states


def test_requeued_training_resumes_from_its_checkpoint(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "requeue.yaml", tiny_gemma, telecom_dir,
                     train=", num_train_epochs: 30.0, save_steps: 10, per_device_train_batch_size: 2")
    tlf("submit", spec, "--out", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "requeue" / "requeue"
    ids = last_submission(tmp_path / "runs" / "requeue")["runs"]["requeue"]
    end = time.monotonic() + 300
    while not list((run_dir / "train").glob("checkpoint-*/trainer_state.json")):
        assert time.monotonic() < end, f"no checkpoint; train job {state(ids['train'])}"
        time.sleep(0.5)
    time.sleep(2)
    assert state(ids["train"]) == "RUNNING"
    subprocess.run(["scontrol", "requeue", ids["train"]], check=True)
    states = wait_final(list(ids.values()), timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    log = "".join(p.read_text(errors="replace") for p in (run_dir / "logs").glob(f"*-{ids['train']}.err"))
    assert "Resuming training from" in log
    attempts = sorted(json.loads(p.read_text())["slurm"].get("SLURM_RESTART_COUNT", "0")
                      for p in (run_dir / "environment").glob("train-*.json"))
    assert attempts == ["0", "1"], attempts
    assert json.loads((run_dir / "train" / "train_results.json").read_text())["epoch"] == pytest.approx(30.0)
    # LLaMA-Factory appended the requeued job's steps to trainer_log.jsonl: the report counts each once
    from telecom_lf import report

    record = report.gather(run_dir.parent).records[0]
    steps = [step for _, step, _ in record.losses]
    assert record.segments == 2 and steps == sorted(set(steps))


def test_test_only_accepts_both_profiles_and_refuses_impossible_requests(tiny_gemma, telecom_dir, tmp_path):
    for profile, override in (("dcu", ""), ("nvidia", "slurm: {partition: debug}\n")):
        spec = spec_file(tmp_path / f"{profile}.yaml", tiny_gemma, telecom_dir,
                         extra=override + "sweep: {grid: {lora_rank: [2, 4]}}\n")
        spec.write_text(spec.read_text().replace("cluster: local-test", f"cluster: {profile}"))
        result = tlf("submit", spec, "--out", tmp_path / "runs", "--test-only")
        assert result.stdout.count("ok   ") == 4, result.stdout  # 2 runs, the array, the report
        job = (tmp_path / "runs" / profile / "r2" / "job.sbatch").read_text()
        assert ("--gres=dcu:1" in job and "--cpus-per-task=8" in job and "--partition=kshdtest" in job
                and "source load_torch2.1_py3.sh" in job) if profile == "dcu" else "--gres=gpu:1" in job
    for bad in ("slurm: {gpus_per_node: 5}\n", "slurm: {partition: nosuchpartition}\n"):
        spec = spec_file(tmp_path / "bad.yaml", tiny_gemma, telecom_dir, extra=bad)
        result = tlf("submit", spec, "--out", tmp_path / "bad", "--test-only", "--force", check=False)
        assert result.returncode == 1 and "FAIL" in result.stdout, result.stdout


def test_shell_values_are_quoted_never_run(tiny_gemma, telecom_dir, tmp_path):
    marker = tmp_path / "pwned"
    profiles = tmp_path / "slurm" / "profiles"
    profiles.mkdir(parents=True)
    hostile = (Path(__file__).resolve().parents[1] / "slurm" / "profiles" / "local-test.yaml").read_text()
    hostile = hostile.replace("env:\n", f"env:\n  EVIL: \"$(touch {marker}); `touch {marker}`\"\n")
    (profiles / "evil.yaml").write_text(hostile)
    spec = spec_file(tmp_path / "quoted.yaml", tiny_gemma, telecom_dir)
    spec.write_text(spec.read_text().replace("cluster: local-test", "cluster: evil"))
    tlf("render", spec, "--out", tmp_path / "runs")
    script = tmp_path / "runs" / "quoted" / "quoted" / "job.sbatch"
    job = subprocess.run(["sbatch", "--parsable", str(script), "score"], capture_output=True, text=True, check=True)
    assert wait_final([job.stdout.strip()], timeout=120)[job.stdout.strip()] == "FAILED"  # nothing to score yet
    assert not marker.exists()
    name = spec_file(tmp_path / "named.yaml", tiny_gemma, telecom_dir)
    name.write_text(name.read_text().replace("name: named", "name: ../escape"))
    result = tlf("render", name, "--out", tmp_path / "runs", check=False)
    assert result.returncode == 2 and "name" in result.stderr
    assert not (tmp_path / "escape").exists()


def test_two_node_job_trains_one_model_across_both_nodes(tiny_gemma, telecom_dir, tmp_path):
    """Two slurmd on this host: one srun task per node, torchrun on each, gloo on CPU."""
    spec = spec_file(tmp_path / "twonode.yaml", tiny_gemma, telecom_dir, extra="slurm: {nodes: 2}\n",
                     train=", per_device_train_batch_size: 4")
    tlf("render", spec, "--out", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "twonode" / "twonode"
    job = subprocess.run(["sbatch", "--parsable", str(run_dir / "job.sbatch"), "train"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert wait_final([job], timeout=300)[job] == "COMPLETED", reason(job)
    log = (run_dir / "logs" / f"twonode-twonode-{job}.err").read_text(errors="replace")
    # 100 rows, 4 per device on 2 processes: a global batch of 8 and ceil(100 / 8) = 13 steps.
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log
    assert json.loads((run_dir / "train" / "trainer_state.json").read_text())["global_step"] == 13


def test_status_shows_jobs_of_plain_sbatch_and_a_vanished_model_as_the_cause(tiny_gemma, telecom_dir, tmp_path):
    """The user's own workflow: tlf render, then sbatch by hand; status reads the run itself."""
    model = tmp_path / "model-copy"
    shutil.copytree(tiny_gemma, model)
    spec = spec_file(tmp_path / "byhand.yaml", model, telecom_dir)
    out = tmp_path / "runs"
    rendered = tlf("render", spec, "--out", out).stdout
    run_dir = out / "byhand" / "byhand"
    assert f"sbatch {run_dir / 'job.sbatch'}" in rendered and "tlf submit" in rendered
    shutil.rmtree(model)  # vanished between rendering and the job's start
    # Held, so that status is asked while the job surely waits: a job whose model is gone fails in
    # under a second, and a status asked after sbatch could otherwise see it already ended.
    job = subprocess.run(["sbatch", "--hold", "--parsable", str(run_dir / "job.sbatch")], capture_output=True,
                         text=True, check=True).stdout.strip()
    queued = tlf("status", spec, "--out", out, check=False)
    assert job in queued.stdout and queued.returncode == 3, queued   # known by its job name before it ever ran
    subprocess.run(["scontrol", "release", job], check=True)
    assert wait_final([job], timeout=300)[job] == "FAILED"
    failed = tlf("status", spec, "--out", out, check=False)
    shown = failed.stdout
    assert failed.returncode == 1 and f"train={job}:FAILED" in shown, shown
    assert "byhand" in shown and " failed " in shown
    assert f"train failed: model directory {model} does not exist (it was there when the run was rendered)" in shown
    assert f"log: {run_dir / 'logs' / 'train.log'}" in shown


def test_submit_sh_chain_cancels_on_failure_and_resubmitting_done_work_queues_nothing(tiny_gemma, telecom_dir,
                                                                                       tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    spec = spec_file(tmp_path / "plain.yaml", broken, telecom_dir)
    tlf("render", spec, "--out", tmp_path / "runs")
    done = subprocess.run(["bash", str(tmp_path / "runs" / "plain" / "submit.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    ids = dict(zip(words[1::2], words[2::2]))  # "plain: train ID predict-... ID score ID"
    states = wait_final([ids["train"], ids["predict-telecom_test_100"], ids["score"]], timeout=300)
    assert states[ids["train"]] == "FAILED"
    assert states[ids["predict-telecom_test_100"]] == states[ids["score"]] == "CANCELLED", states

    good = spec_file(tmp_path / "good.yaml", tiny_gemma, telecom_dir)
    tlf("run", good, "--out", tmp_path / "runs")
    again = tlf("submit", good, "--out", tmp_path / "runs")
    assert "nothing to do" in again.stdout
    assert not (tmp_path / "runs" / "good" / "jobs.json").exists()


def test_chat_on_a_compute_node_through_srun_pty(tiny_gemma, telecom_dir, tmp_path):
    """`tlf chat --srun`: the chat runs inside an allocation from the spec's profile and
    answers as the run's predict step did."""
    spec = spec_file(tmp_path / "talk.yaml", tiny_gemma, telecom_dir, extra="decoding: greedy\n")
    tlf("run", spec, "--out", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "talk" / "talk"
    rows = [
        json.loads(line)
        for line in (run_dir / "predict-telecom_test_100" / "generated_predictions.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    ]
    question = json.loads((telecom_dir / "telecom_test_100.json").read_text(encoding="utf-8"))[0]["instruction"]
    terminal = Terminal([tlf_bin(), "chat", str(spec), "--out", str(tmp_path / "runs"), "--srun", "--raw"])
    banner = terminal.read_until("Type a question")
    assert "Slurm job" in banner and "on node" in banner, banner
    terminal.read_until("You: ")
    terminal.type(question + "\n")
    terminal.read_until("Model: ")
    answer = terminal.read_until("You: ").removesuffix("You: ").replace("\r\n", "\n").strip()
    assert answer == rows[0]["predict"].strip()
    terminal.type("\x04")
    assert terminal.exit_code() == 0


def test_probe_submitted_as_one_job_answers_like_the_local_probe(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "ask.yaml", tiny_gemma, telecom_dir, extra="decoding: greedy\n")
    runs = tmp_path / "runs"
    tlf("run", spec, "--out", runs)
    submitted = tlf("probe", spec, "--out", runs, "--from", "telecom_test_100", "--rows", "3", "--submit").stdout
    job = submitted.split("probe job ", 1)[1].split(":", 1)[0]
    assert wait_final([job]) == {job: "COMPLETED"}
    [where] = list((runs / "ask" / "report" / "probe").iterdir())
    record = json.loads((where / "probe.json").read_text(encoding="utf-8"))
    predictions = [json.loads(line)["predict"] for line in
                   (runs / "ask" / "ask" / "predict-telecom_test_100" / "generated_predictions.jsonl")
                   .read_text(encoding="utf-8").splitlines()]
    assert [r["answers"]["ask"] for r in record] == predictions[:3] and all("base" in r["answers"] for r in record)
    local = tlf("probe", spec, "--out", runs, "--from", "telecom_test_100", "--rows", "3").stdout
    assert local.count("answers exist") == 2            # the job's answers are reused, none redone


def test_a_job_and_a_local_run_on_one_run_exactly_one_trains(tiny_gemma, telecom_dir, tmp_path):
    """A plain `sbatch job.sbatch` trains; a local `tlf run` of the same spec meanwhile is refused
    at once, naming the job; the job's training is the only one in the trainer log."""
    spec = spec_file(tmp_path / "both.yaml", tiny_gemma, telecom_dir, train=", per_device_train_batch_size: 1")
    out = tmp_path / "runs"
    tlf("render", spec, "--out", out)
    run_dir = out / "both" / "both"
    job = subprocess.run(["sbatch", "--parsable", str(run_dir / "job.sbatch")], capture_output=True, text=True,
                         check=True).stdout.strip()
    record = run_dir / "steps" / "train.json"
    end = time.monotonic() + 300
    while not (record.exists() and json.loads(record.read_text())["state"] == "running"):
        assert time.monotonic() < end and state(job) not in FINAL, f"job {job} never started training"
        time.sleep(0.3)
    local = tlf("run", spec, "--out", out, check=False)
    assert local.returncode == 2 and f"Slurm job {job}" in local.stderr and "is working on it" in local.stderr, \
        local.stdout + local.stderr
    assert wait_final([job])[job] == "COMPLETED"
    logged = [json.loads(line) for line in (run_dir / "train" / "trainer_log.jsonl").read_text().splitlines()]
    steps = [entry["current_steps"] for entry in logged if "loss" in entry]
    assert steps and len(steps) == len(set(steps))
    assert json.loads(record.read_text())["job_id"] == job


def test_site_setup_lines_may_extend_unset_variables_and_a_failing_one_fails_the_job(tiny_gemma, telecom_dir,
                                                                                       tmp_path):
    setup = ("slurm: {setup: ['export TLF_SITE_LIB=/opt/site/lib:$TLF_NEVER_SET_BY_ANYONE', "
             "'echo \"site set-up ran: $TLF_SITE_LIB\" >&2']}\n")
    spec = spec_file(tmp_path / "site.yaml", tiny_gemma, telecom_dir, extra=setup)
    tlf("render", spec, "--out", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "site" / "site"
    job = subprocess.run(["sbatch", "--parsable", str(run_dir / "job.sbatch")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert wait_final([job])[job] == "COMPLETED"
    err = next((run_dir / "logs").glob(f"*-{job}.err")).read_text()
    assert "site set-up ran: /opt/site/lib:" in err and "unbound variable" not in err

    failing = spec_file(tmp_path / "broken.yaml", tiny_gemma, telecom_dir,
                        extra="slurm: {setup: ['ls /no/such/site/script.sh']}\n")
    tlf("render", failing, "--out", tmp_path / "runs")
    broken_dir = tmp_path / "runs" / "broken" / "broken"
    job = subprocess.run(["sbatch", "--parsable", str(broken_dir / "job.sbatch")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert wait_final([job])[job] == "FAILED"
    assert "/no/such/site/script.sh" in next((broken_dir / "logs").glob(f"*-{job}.err")).read_text()
    assert not (broken_dir / "steps").exists()


def test_status_says_at_once_when_the_controller_does_not_answer(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "down.yaml", tiny_gemma, telecom_dir)
    tlf("render", spec, "--out", tmp_path / "runs")
    conf = tmp_path / "etc"
    conf.mkdir()
    source = Path(os.environ["SLURM_CONF"])
    (conf / "slurm.conf").write_text("\n".join("SlurmctldPort=1" if line.startswith("SlurmctldPort=") else line
                                               for line in source.read_text().splitlines()) + "\n")
    shutil.copy(source.parent / "gres.conf", conf / "gres.conf")
    started = time.monotonic()
    result = subprocess.run([tlf_bin(), "status", str(spec), "--out", str(tmp_path / "runs")], capture_output=True,
                            text=True, env={**os.environ, "SLURM_CONF": str(conf / "slurm.conf")})
    assert time.monotonic() - started < 10          # squeue alone retries for ~18 s
    assert result.returncode == 1 and "the Slurm controller does not answer" in result.stderr, result.stderr
    assert "down " in result.stdout and "rendered" in result.stdout   # the runs' own state is still shown


def test_a_broken_jobs_json_submits_nothing_and_status_says_why(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "broken-jobs.yaml", tiny_gemma, telecom_dir)
    out = tmp_path / "runs"
    tlf("render", spec, "--out", out)
    jobs = out / "broken-jobs" / "jobs.json"
    jobs.write_text('[{"runs": {"broken-jobs": {"train": "-d"}}}]')
    submitted = tlf("submit", spec, "--out", out, check=False)
    assert submitted.returncode == 2 and "jobs.json: not the list of submission records" in submitted.stderr
    assert "Traceback" not in submitted.stderr
    queued = subprocess.run(["squeue", "-h", "--name=broken-jobs-broken-jobs"], capture_output=True, text=True)
    assert queued.stdout.strip() == ""
    assert jobs.read_text() == '[{"runs": {"broken-jobs": {"train": "-d"}}}]'
    shown = tlf("status", spec, "--out", out, check=False)
    assert shown.returncode == 1 and "jobs.json" in shown.stderr and "Traceback" not in shown.stderr
    assert "broken-jobs" in shown.stdout


def test_a_second_submit_while_the_first_is_queued_is_refused(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "again.yaml", tiny_gemma, telecom_dir, train=", per_device_train_batch_size: 1")
    out = tmp_path / "runs"
    tlf("submit", spec, "--out", out)
    record = json.loads((out / "again" / "jobs.json").read_text())[-1]
    ids = [*record["runs"]["again"].values(), record["report"]]
    try:
        second = tlf("submit", spec, "--out", out, check=False)
        assert second.returncode == 2 and "still queued or running" in second.stderr, second.stderr
        assert record["runs"]["again"]["train"] in second.stderr
        assert len(json.loads((out / "again" / "jobs.json").read_text())) == 1
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_a_sweep_with_checkpoint_selection_runs_as_one_array_and_reports_the_choice(tiny_gemma, telecom_dir,
                                                                                       tmp_path):
    spec = spec_file(tmp_path / "selsweep.yaml", tiny_gemma, telecom_dir,
                     train=", num_train_epochs: 2.0, per_device_train_batch_size: 16",
                     extra="sweep: {grid: {lora_rank: [2, 4]}}\nselect: {on: telecom_dev_200, metric: rouge-1}\n")
    tlf("submit", spec, "--out", tmp_path / "runs")
    root = tmp_path / "runs" / "selsweep"
    record = last_submission(root)
    states = wait_final([record["array"], record["report"]], timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    for name in ("r2", "r4"):
        selection = json.loads((root / name / "selection.json").read_text())
        assert [c["step"] for c in selection["checkpoints"]] == [7, 14]        # every epoch, each scored
        assert os.readlink(root / name / "selected") == f"train/checkpoint-{selection['chosen']['step']}"
        assert (root / name / "scores.json").exists()
    assert (root / "report" / "selection.png").exists()


def test_a_chain_with_checkpoint_selection_puts_a_select_job_between_train_and_predict(tiny_gemma, telecom_dir,
                                                                                          tmp_path):
    spec = spec_file(tmp_path / "selchain.yaml", tiny_gemma, telecom_dir,
                     train=", num_train_epochs: 2.0, per_device_train_batch_size: 16",
                     extra="select: {on: telecom_dev_200}\n")
    tlf("submit", spec, "--out", tmp_path / "runs")
    root = tmp_path / "runs" / "selchain"
    ids = last_submission(root)["runs"]["selchain"]
    assert list(ids) == ["train", "select", "predict-telecom_test_100", "score"]
    dependency = subprocess.run(["scontrol", "show", "job", ids["predict-telecom_test_100"]], capture_output=True,
                                text=True).stdout
    assert f"afterok:{ids['select']}" in dependency
    states = wait_final(list(ids.values()), timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    assert json.loads((root / "selchain" / "selection.json").read_text())["chosen"]["step"] in (7, 14)


def _status(spec: Path, out: Path) -> tuple[int, dict[str, str], str]:
    """tlf status's exit code, each run's state word, and its whole output."""
    done = tlf("status", spec, "--out", out, check=False)
    words = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()
             if line and not line.startswith((" ", "experiment ", "report job", "predict job"))
             and "run(s):" not in line}
    return done.returncode, words, done.stdout + done.stderr


def test_a_cancelled_array_task_is_cancelled_not_training_and_status_fails(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "cancel.yaml", tiny_gemma, telecom_dir, train=", num_train_epochs: 200.0",
                     extra="sweep: {grid: {lora_rank: [1, 2]}}\n")
    out = tmp_path / "runs"
    tlf("submit", spec, "--out", out)
    record = last_submission(out / "cancel")
    task = {name: jobs["array_task"] for name, jobs in record["runs"].items()}
    name = next(n for n, t in task.items() if t.endswith("_1"))
    train_record = out / "cancel" / name / "steps" / "train.json"
    end = time.monotonic() + patience(300)
    while not (train_record.exists() and json.loads(train_record.read_text())["state"] == "running"):
        assert time.monotonic() < end, f"task {task[name]} never started training"
        time.sleep(1)
    subprocess.run(["scancel", task[name]], check=True)
    assert wait_final([task[name]], timeout=120)[task[name]] == "CANCELLED"
    others = [record["array"], record["predict"], record["report"]]   # the sweep's shared predict job too
    subprocess.run(["scancel", *others], check=True)
    wait_final(others, timeout=120)
    code, words, shown = _status(spec, out)
    assert words[name] == "cancelled", shown         # its step record may still say running: Slurm knows better
    assert code == 1 and "cancelled" in shown.splitlines()[-1], shown


def test_a_plain_sbatch_refused_by_the_rendered_file_check_is_failed_with_its_err(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "edited.yaml", tiny_gemma, telecom_dir)
    out = tmp_path / "runs"
    tlf("render", spec, "--out", out)
    run_dir = out / "edited" / "edited"
    (run_dir / "train.yaml").write_text((run_dir / "train.yaml").read_text() + "learning_rate: 1.0\n")
    job = subprocess.run(["sbatch", "--parsable", str(run_dir / "job.sbatch")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert wait_final([job], timeout=300)[job] == "FAILED"
    code, words, shown = _status(spec, out)
    assert code == 1 and words["edited"] == "failed", shown
    err = next(line.split("its stderr: ", 1)[1] for line in shown.splitlines() if "its stderr: " in line)
    assert Path(err).is_file() and "train.yaml" in Path(err).read_text(), (err, shown)


def test_a_tracked_sweep_in_parallel_array_tasks_loses_no_mlflow_run(tiny_gemma, telecom_dir, tmp_path):
    """#32: four array tasks at once write into one SQLite store (the experiment made at submit; each
    task adds its run under tlf's lock, then LLaMA-Factory's callback and the score step log into it)."""
    mlflow = pytest.importorskip("mlflow", reason="the tracking extra: ./dev.sh test installs it")
    spec = spec_file(tmp_path / "tracked.yaml", tiny_gemma, telecom_dir, sets=("telecom_test_100", "telecom_train_100"),
                     extra="tracking: mlflow\nslurm: {array_parallel: 4}\nsweep: {grid: {lora_rank: [1, 2, 3, 4]}}\n")
    submitted = tlf("submit", spec, "--out", tmp_path / "runs").stdout
    root = tmp_path / "runs" / "tracked"
    assert f"MLflow experiment 'tracked' (id 1) in sqlite:///{root}/mlflow.db" in submitted
    record = last_submission(root)
    most, end = 0, time.monotonic() + patience(900)
    while state(record["report"]) not in FINAL:
        running = subprocess.run(["squeue", "-h", "-r", "-j", record["array"], "-t", "RUNNING", "-o", "%i"],
                                 capture_output=True, text=True).stdout.split()
        most = max(most, len(running))
        assert time.monotonic() < end, "the tracked sweep did not finish"
        time.sleep(0.5)
    assert state(record["report"]) == "COMPLETED"
    assert most >= 2, f"only {most} array task(s) ran at once: the store saw no parallel writers"
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=100)}
    assert set(runs) == {"r1", "r2", "r3", "r4", "report"}
    for rank in (1, 2, 3, 4):
        run = runs[f"r{rank}"]
        logged = [(m.step, round(m.value, 4)) for m in client.get_metric_history(run.info.run_id, "loss")]
        rows = [json.loads(line) for line in (root / f"r{rank}" / "train" / "trainer_log.jsonl").read_text()
                .splitlines()]
        assert logged == [(r["current_steps"], round(r["loss"], 4)) for r in rows if "loss" in r]
        scores = json.loads((root / f"r{rank}" / "scores.json").read_text())["sets"]
        assert run.data.metrics["acc_telecom_test_100"] == scores["telecom_test_100"]["acc"]
        assert run.data.params["lf.lora_rank"] == str(rank)


SHARED_SWEEP = ("decoding: greedy\nslurm: {array_parallel: 3}\n"
                "sweep:\n  vary: {use_dora: [true], finetuning_type: [full]}\n")


def test_a_shared_sweep_trains_in_its_array_then_predicts_every_run_in_one_job_reading_the_base_once(
        tiny_gemma, telecom_dir, tmp_path):
    """#31 on Slurm: the array tasks train; one job after them (afterany) predicts and scores every
    run, the base model read from disk once for the adapter runs; status shows that job."""
    sets = ("telecom_test_100", "telecom_train_100")
    spec = spec_file(tmp_path / "shared.yaml", tiny_gemma, telecom_dir, extra=SHARED_SWEEP, sets=sets)
    submitted = tlf("submit", spec, "--out", tmp_path / "runs").stdout
    root = tmp_path / "runs" / "shared"
    record = last_submission(root)
    assert f"then predict {record['predict']} (every run, the base read once)" in submitted
    dependency = subprocess.run(["scontrol", "show", "job", record["predict"]], capture_output=True, text=True).stdout
    assert f"afterany:{record['array']}" in dependency
    states = wait_final([record["array"], record["predict"], record["report"]], timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    loads = []
    for name in ("shared", "dora", "finetuning_typefull"):
        steps = {p.stem: json.loads(p.read_text()) for p in (root / name / "steps").glob("*.json")}
        assert steps["train"]["job_id"] == record["runs"][name]["array_task"]     # trained by its array task
        assert {steps[f"predict-{s}"]["job_id"] for s in sets} | {steps["score"]["job_id"]} == {record["predict"]}
        assert (root / name / "scores.json").exists()
        for dataset in sets:
            log = (root / name / "logs" / f"predict-{dataset}.log").read_text(errors="replace")
            loads += [(name, kind) for kind in ("read from disk", "an in-memory copy") if f": {kind}" in log]
    assert sorted(kind for _, kind in loads) == ["an in-memory copy"] * 3 + ["read from disk"], loads
    assert not any(name == "finetuning_typefull" for name, _ in loads)   # a full fine-tune reads its own weights
    code, words, shown = _status(spec, tmp_path / "runs")
    assert code == 0 and set(words.values()) == {"done"}, shown
    assert f"predict job {record['predict']} (every run's predicts, the base read once): COMPLETED" in shown


def test_a_requeued_shared_predict_job_predicts_no_finished_set_twice(tiny_gemma, telecom_dir, tmp_path):
    sets = ("telecom_test_100", "telecom_train_100")
    spec = spec_file(tmp_path / "requeued.yaml", tiny_gemma, telecom_dir, sets=sets,
                     extra="decoding: greedy\nslurm: {array_parallel: 3}\nsweep: {grid: {lora_rank: [1, 2, 3]}}\n")
    tlf("submit", spec, "--out", tmp_path / "runs", "--set", "predict.max_samples=100")
    root = tmp_path / "runs" / "requeued"
    record = last_submission(root)
    records = [root / f"r{rank}" / "steps" / f"predict-{s}.json" for rank in (1, 2, 3) for s in sets]

    def done_now() -> list[Path]:
        return [p for p in records if p.exists() and json.loads(p.read_text())["state"] == "done"]

    end = time.monotonic() + patience(600)
    while not done_now():
        assert time.monotonic() < end and state(record["predict"]) not in FINAL, state(record["predict"])
        time.sleep(0.2)
    finished = done_now()
    assert len(finished) < len(records), "every set was predicted before the requeue: nothing left to test"
    subprocess.run(["scontrol", "requeue", record["predict"]], check=True)
    states = wait_final([record["predict"], record["report"]], timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    for path in records:
        log = (path.parent.parent / "logs" / f"{path.stem}.log").read_text(errors="replace")
        served = log.count("tlf-lf serve: ")
        assert served == 1 if path in finished else 1 <= served <= 2, (path, served)   # at most the one cut short
        assert json.loads(path.read_text())["state"] == "done"
    attempts = {json.loads(p.read_text())["slurm"].get("SLURM_RESTART_COUNT", "0")
                for p in root.glob("r*/environment/predict-*.json")}
    assert attempts == {"0", "1"}, attempts


def test_slurm_predict_benchmark_small(tmp_path):
    """benchmarks/slurm_predict_bench.py on a small shape (a smoke test: no timing is asserted)."""
    import sys

    from conftest import REPO

    out = tmp_path / "b.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "slurm_predict_bench.py"), "--runs", "2",
                           "--rows", "4", "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["identical"] and "predictions identical across modes: True" in done.stdout
    per_run, shared = result["results"]
    assert per_run["states"] == shared["states"] == ["COMPLETED"]
    assert (per_run["base_reads"], shared["base_reads"]) == (4, 1) and shared["jobs"] == per_run["jobs"] + 1
