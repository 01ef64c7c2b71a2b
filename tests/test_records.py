"""The records render writes (manifest.json, experiment.json): versioned, typed, read back by
rundir, the report and the executor; and the rendered files of the repository's own specs held
byte-identical to tests/fixtures/rendered/ (apart from format_version)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from golden_render import SPECS, rendering

from telecom_lf import data, records, rundir
from telecom_lf.errors import TlfError

pytestmark = pytest.mark.unit
GOLDEN = REPO / "tests" / "fixtures" / "rendered"


@pytest.fixture(scope="module")
def blog_split(tmp_path_factory) -> Path:
    return data.prepare_synthetic(tmp_path_factory.mktemp("golden-data"), mode="blog")


@pytest.mark.parametrize("spec", SPECS)
def test_rendered_files_are_byte_identical_to_the_fixture(spec, blog_split, tiny_gemma, tmp_path):
    """experiments/*.yaml render to the same bytes as before the records were versioned: only
    format_version is new (tests/golden_render.py says what else is normalised, and writes the fixture)."""
    out = tmp_path / "runs"
    texts = rendering(REPO, spec, tiny_gemma, blog_split, out)
    expected_dir = GOLDEN / spec.replace("/", "-")
    expected = {str(p.relative_to(expected_dir)): p.read_text(encoding="utf-8")
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(texts) == sorted(expected)
    different = [name for name in texts if texts[name] != expected[name]]
    assert not different, f"rendered files changed: {different[:5]}"
    for path in out.rglob("*.json"):
        if path.name in (rundir.MANIFEST, rundir.EXPERIMENT):
            text = path.read_text(encoding="utf-8")
            assert text.startswith('{\n  "format_version": 1,\n'), path


# ---------------------------------------------------------------- versions


def _manifest(**changes) -> dict:
    record = {"tlf": "0", "versions": {}, "spec": "s.yaml", "spec_sha256": "x", "git_commit": None,
              "experiment": "e", "run": "r", "model": {"name": "m", "path": "/m"}, "prompt": "blog",
              "template": "default", "seed": 42, "varied": {}, "baseline": False, "trains": True,
              "finetuning_type": "lora", "dora_kernel": "peft", "predict_sets": ["t"], "select": None,
              "dataset_dir": "/d", "split_manifest": None, "files": {}}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def test_a_manifest_round_trips_with_its_version_first():
    manifest = records.Manifest.from_json(_manifest(format_version=1), "m.json")
    text = manifest.to_json().decode()
    assert text.startswith('{\n  "format_version": 1,\n  "tlf": "0",')
    assert records.Manifest.from_json(json.loads(text), "m.json") == manifest


def test_a_manifest_from_before_versioning_is_read_as_version_0():
    old = _manifest()
    assert "format_version" not in old
    manifest = records.Manifest.from_json(old, "m.json")
    assert manifest.format_version == 0 and manifest.predict_sets == ["t"] and manifest.trains


def test_an_old_manifest_without_later_fields_still_reads():
    manifest = records.Manifest.from_json(_manifest(dora_kernel=..., select=..., split_manifest=...), "m.json")
    assert manifest.dora_kernel == "peft" and manifest.select is None and manifest.split_manifest is None


@pytest.mark.parametrize(
    "version, says",
    [(2, "newer tlf"), (-1, "not a record version"), ("1", "not a record version"), (True, "not a record version")],
)
def test_a_version_tlf_does_not_know_is_refused_with_what_to_do(version, says):
    with pytest.raises(TlfError, match=says) as caught:
        records.Manifest.from_json(_manifest(format_version=version), "runs/e/r/manifest.json")
    assert "runs/e/r/manifest.json" in str(caught.value) and "tlf render" in str(caught.value)


@pytest.mark.parametrize("changes", [{"predict_sets": "t"}, {"files": []}, {"model": {"name": "m"}},
                                     {"varied": [1]}, {"select": "dev"}])
def test_a_manifest_of_the_wrong_shape_is_refused(changes):
    with pytest.raises(TlfError, match="re-render"):
        records.Manifest.from_json(_manifest(**changes), "m.json")


def test_an_experiment_record_reads_old_and_new(tmp_path):
    old = {"experiment": "e", "spec": "s.yaml", "spec_sha256": "x", "predict_sets": ["t"], "axes": [],
           "runs": [{"name": "r1", "model": "m", "varied": {"lora_rank": 8}, "baseline": False, "train": True,
                     "point": {"lora_rank": 8}, "reference": None, "label": "first"}]}
    record = records.ExperimentRecord.from_json(old, "e.json")
    assert record.format_version == 0 and record.run("r1").label == "first"
    again = records.ExperimentRecord.from_json(json.loads(record.to_json()), "e.json")
    assert again.runs == record.runs and again.format_version == 0
    new = records.ExperimentRecord.from_json({**old, "format_version": 1}, "e.json")
    assert new.to_json().decode().startswith('{\n  "format_version": 1,')
    with pytest.raises(TlfError, match="newer tlf"):
        records.ExperimentRecord.from_json({**old, "format_version": 99}, "e.json")
    with pytest.raises(TlfError, match="axes"):
        records.ExperimentRecord.from_json({**old, "axes": "grid"}, "e.json")
