"""sbatch rendering without a cluster: #SBATCH lines, job names, the chain in submit.sh, the
explicit `tlf step` options, and hostile profile values refused before anything is written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import spec_file, tlf_bin

pytestmark = pytest.mark.unit


def tlf(*args, check=True, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stderr}")
    return result


def test_sbatch_lines_are_literal_and_complete():
    from telecom_lf.cluster import Profile
    from telecom_lf.slurm import sbatch_lines

    profile = Profile(name="p", partition="kshdtest", gres="dcu", gpus_per_node=2, cpus_per_gpu=8, mem="64G")
    lines = sbatch_lines(profile, "r1-exp", Path("/runs/exp/r1/logs"))
    assert lines[:6] == ["--job-name=r1-exp", "--partition=kshdtest", "--nodes=1", "--ntasks-per-node=1",
                         "--cpus-per-task=16", "--gres=dcu:2"]
    assert "--mem=64G" in lines and "--output=/runs/exp/r1/logs/%x-%j.out" in lines
    assert lines[-3:] == ["--requeue", "--signal=B:USR1@300", "--open-mode=append"]
    assert "--array=0-3%2" in sbatch_lines(profile, "s", Path("/l"), array="0-3%2")
    with pytest.raises(Exception, match="must not contain"):
        sbatch_lines(profile, "r1", Path("/runs/my runs/logs"))


def test_job_names_begin_with_the_run_name_and_steps_get_explicit_options(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "names.yaml", tiny_gemma, telecom_dir,
                     extra="slurm: {nodes: 2}\nsweep: {grid: {lora_rank: [2, 4]}}\n")
    tlf("render", spec, "--out", tmp_path / "runs")
    root = tmp_path / "runs" / "names"
    job = (root / "r2" / "job.sbatch").read_text()
    assert "#SBATCH --job-name=r2-names\n" in job     # squeue's 8 columns: "r2-names"
    assert "--srun-nodes 2 --nproc-per-node 1" in job and "TLF_SRUN_TRAIN" not in job
    assert "#SBATCH --job-name=sweep-names\n" in (root / "array.sbatch").read_text()


def _recording_sbatch(tmp_path: Path) -> tuple[dict, Path]:
    """An `sbatch` stand-in that records each call's arguments (a line each) and answers job ids
    100, 101, ...: submit.sh's chaining without a cluster (the Slurm suite runs it for real)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\nn=$(( $(wc -l < "$CALLS" 2>/dev/null || echo 0) + 100 ))\n'
                                    'printf "%s\\n" "$*" >> "$CALLS"\necho "$n"\n')
    (bin_dir / "sbatch").chmod(0o755)
    calls = tmp_path / "calls"
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)}, calls


def test_submit_sh_walks_the_same_chain_and_kills_on_invalid_dependencies(tiny_gemma, telecom_dir, tmp_path):
    """submit.sh run with an sbatch that only records its arguments (no cluster needed here; the
    Slurm suite runs it for real): every dependent job names its parents and --kill-on-invalid-dep."""
    spec = spec_file(tmp_path / "chained.yaml", tiny_gemma, telecom_dir, sets=("telecom_test_100", "telecom_train_100"))
    tlf("render", spec, "--out", tmp_path / "runs")
    env, calls = _recording_sbatch(tmp_path)
    done = subprocess.run(["bash", str(tmp_path / "runs" / "chained" / "submit.sh")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].endswith("job.sbatch train") and "--dependency" not in lines[0]
    assert lines[1].startswith("--parsable --dependency=afterok:100 --kill-on-invalid-dep=yes")
    assert lines[1].endswith("predict telecom_test_100") and lines[2].endswith("predict telecom_train_100")
    assert "--dependency=afterok:101:102 --kill-on-invalid-dep=yes" in lines[3] and lines[3].endswith(" score")
    assert "--dependency=afterany:103" in lines[4] and lines[4].endswith("report.sbatch")
    assert "chained: train 100 predict-telecom_test_100 101" in done.stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        ("cluster: nosuchprofile\n", "unknown cluster profile 'nosuchprofile'; known: dcu, local-test, nvidia"),
        ("slurm: {partition: 'debug; rm -rf /'}\n", "partition: 'debug; rm -rf /' has characters"),
        ('slurm: {qos: "$(touch /tmp/pwned)"}\n', "qos: '$(touch /tmp/pwned)' has characters"),
        ("slurm: {partiton: debug}\n", "did you mean 'partition'"),
        (
            'slurm: {extra_sbatch: ["--exclusive\\n#SBATCH --x"]}\n',
            "extra_sbatch: '--exclusive\\n#SBATCH --x' holds a newline",
        ),
        ("slurm: {setup: 'source env.sh'}\n", "slurm.setup: expected a list"),
        # a spec's own bad value is named by the spec's file, line and key, not by the profile's file
        (
            "slurm:\n  gpu_memory_gb: lots\n",
            "hostile.yaml:{line}: slurm.gpu_memory_gb: expected a number of GB above 0",
        ),
        ("slurm:\n  partiton: debug\n", "hostile.yaml:{line}: slurm.partiton: unknown key"),
    ],
)
def test_hostile_or_unknown_profile_values_are_refused(tiny_gemma, telecom_dir, tmp_path, extra, message):
    spec = spec_file(tmp_path / "hostile.yaml", tiny_gemma, telecom_dir, extra=extra)
    if extra.startswith("cluster:"):
        spec.write_text(spec.read_text().replace("cluster: local-test\n", ""))
    result = tlf("render", spec, "--out", tmp_path / "runs", check=False)
    text = spec.read_text().splitlines()
    line = next((i + 1 for i, t in enumerate(text) if t.startswith("  ")), None) if "{line}" in message else None
    assert result.returncode == 2 and message.format(line=line) in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_probe_job_asks_for_one_card_no_requeue_and_quotes_the_request(tiny_gemma, telecom_dir, tmp_path):
    from telecom_lf import slurm
    from telecom_lf import spec as spec_mod

    spec_path = spec_file(tmp_path / "p.yaml", tiny_gemma, telecom_dir,
                          extra="slurm: {gpus_per_node: 4, nodes: 2, setup: ['export X=$UNSET_BY_SITE']}\n")
    spec = spec_mod.load(spec_path, [])
    request = tmp_path / "probe $(touch pwned)" / "probe_request.json"
    script = slurm.probe_script(spec, tmp_path, request).decode()
    assert "#SBATCH --gres=dcu:1\n" in script and "#SBATCH --nodes=1\n" in script
    assert "--requeue" not in script and "set -u" not in script   # site set-up may extend unset variables
    last = script.rstrip().splitlines()[-1]
    assert last.endswith("probe --request '" + str(request) + "'")


def test_a_profile_with_a_key_given_twice_is_refused_at_its_line(tiny_gemma, telecom_dir, tmp_path):
    profiles = tmp_path / "slurm" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "twice.yaml").write_text("partition: debug\ngres: dcu\npartition: kshdtest\n")
    spec = spec_file(tmp_path / "p.yaml", tiny_gemma, telecom_dir)
    spec.write_text(spec.read_text().replace("cluster: local-test", "cluster: twice"))
    result = tlf("render", spec, "--out", tmp_path / "runs", check=False)
    assert result.returncode == 2 and "twice.yaml:3: partition is given twice (first at line 1)" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_submit_sh_puts_the_select_job_between_train_and_predict(tiny_gemma, telecom_dir, tmp_path):
    spec = spec_file(tmp_path / "sel.yaml", tiny_gemma, telecom_dir, extra="select: {on: telecom_dev_200}\n")
    tlf("render", spec, "--out", tmp_path / "runs")
    run = tmp_path / "runs" / "sel" / "sel"
    assert "sbatch " + str(run / "job.sbatch") + " select" in (run / "job.sbatch").read_text()
    env, calls = _recording_sbatch(tmp_path)
    done = subprocess.run(
        ["bash", str(tmp_path / "runs" / "sel" / "submit.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].endswith("job.sbatch train")
    assert "--dependency=afterok:100 " in lines[1] and lines[1].endswith("job.sbatch select")
    assert "--dependency=afterok:101 " in lines[2] and lines[2].endswith("predict telecom_test_100")
    assert "--dependency=afterok:102 " in lines[3] and lines[3].endswith(" score")
