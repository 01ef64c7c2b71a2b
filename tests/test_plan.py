"""Plan expansion in-process (no LLaMA-Factory process, no Slurm): grid x zip, vary around the
base point, ties, the upstream baseline, names, and a repeated point refused."""

from __future__ import annotations

import json

import pytest

from telecom_lf import plan, spec
from telecom_lf.errors import TlfError

pytestmark = pytest.mark.unit


@pytest.fixture()
def load(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    data = tmp_path / "data"
    data.mkdir()
    entry = {"file_name": "t.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    (data / "dataset_info.json").write_text(json.dumps({"tr": entry, "te": entry}))
    (data / "t.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}] * 64))

    def _load(sweep: str, extra: str = ""):
        path = tmp_path / "s.yaml"
        path.write_text(f"name: s\nmodel: {model}\ntemplate: default\ndata: {{dir: {data}, train: tr, predict: [te]}}\n"
                        f"train: {{lora_rank: 8, lora_dropout: 0.1, use_dora: true}}\nsweep: {sweep}\n{extra}")
        return plan.expand(spec.load(path))
    return _load


def test_grid_times_zip_in_a_stable_order(load):
    runs = load(
        "{grid: {lora_rank: [4, 16]}, zip: [{lora_target: [q_proj, 'q_proj,v_proj'], lora_dropout: [0.1, 0.0]}]}"
    )
    assert [r.name for r in runs] == ["r4-q-d0.1", "r4-qv-d0", "r16-q-d0.1", "r16-qv-d0"]
    assert runs[1].train_args["lora_target"] == "q_proj,v_proj" and runs[1].train_args["lora_dropout"] == 0.0


def test_vary_is_one_factor_at_a_time_around_the_base_with_ties(load):
    runs = load("{vary: {lora_rank: [8, 32], use_dora: [false]}, tie: {lora_alpha: 2 * lora_rank}}",
                "baseline: upstream\n")
    assert [r.name for r in runs] == ["r8-a16", "r32-a64", "r8-a16-nodora", "upstream-defaults"]
    assert runs[1].train_args["lora_alpha"] == 64 and runs[2].train_args["use_dora"] is False
    baseline = runs[-1]
    assert baseline.is_baseline and "lora_rank" not in baseline.train_args and "use_dora" not in baseline.train_args


def test_a_repeated_point_is_refused(load):
    with pytest.raises(TlfError, match="two runs are both named"):
        load("{grid: {lora_rank: [4, 4]}}")
