"""#28: the demo's base model is shipped pre-trained (experiments/demo-base), so that the demo's
story does not change with the machine; `tlf model demo-base --pretrain` rebuilds it here.

A copy is checked against the sha256 its provenance records; the shipped tokenizer and shape
are the ones the current code builds (a change of the synthetic vocabulary must rebuild it);
and the pre-training recipe still runs and learns."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_while_progressing, tlf_bin

from telecom_lf import demo, paths, tiny
from telecom_lf.cli import main
from telecom_lf.errors import TlfError
from telecom_lf.fsutil import sha256_file

SHAPE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id",
         "pad_token_id")


def _provenance(directory: Path) -> dict:
    return json.loads((directory / demo.PROVENANCE).read_text(encoding="utf-8"))


@pytest.mark.unit
def test_the_shipped_base_is_whole_and_says_how_it_was_built():
    shipped = demo.shipped_base()
    provenance = _provenance(shipped)
    assert sorted(provenance["files"]) == sorted(demo.BASE_FILES)
    for name, digest in provenance["files"].items():
        assert sha256_file(shipped / name) == digest, name
    assert provenance["command"] == "tlf model demo-base --pretrain"
    assert provenance["pretrain"] == demo.PRETRAIN, "the recipe changed: rebuild experiments/demo-base"
    assert provenance["random_init"] == json.loads(json.dumps(dataclasses.asdict(demo.BASE_SPEC)))
    assert 0 < provenance["final_loss"] < 2.0


@pytest.mark.unit
def test_the_shipped_tokenizer_and_shape_are_what_the_code_builds_today(tmp_path):
    """The synthetic vocabulary (synth.py) makes the tokenizer: a change there without a rebuilt
    base would feed the shipped weights token ids they never saw."""
    fresh = tiny.build(tmp_path / "random-init", demo.BASE_SPEC)
    shipped = demo.shipped_base()
    assert json.loads((fresh / "tokenizer.json").read_text()) == json.loads((shipped / "tokenizer.json").read_text())
    # LLaMA-Factory's save adds keys of its own (padding_side, ...); the builder's must be as built.
    built_config, shipped_config = (json.loads((d / "tokenizer_config.json").read_text()) for d in (fresh, shipped))
    assert {k: shipped_config.get(k) for k in built_config} == built_config
    built, ours = (json.loads((d / "config.json").read_text()) for d in (fresh, shipped))
    assert {k: built.get(k) for k in SHAPE} == {k: ours.get(k) for k in SHAPE}


@pytest.mark.unit
def test_model_demo_base_copies_the_shipped_weights_and_refuses_a_damaged_copy(tmp_path, monkeypatch):
    out = tmp_path / "models" / "base"
    done = CliRunner().invoke(main, ["model", "demo-base", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert f"a copy of {demo.shipped_base()}" in done.output
    for name in demo.BASE_FILES:
        assert (out / name).read_bytes() == (demo.shipped_base() / name).read_bytes(), name
    assert (out / "model.safetensors").stat().st_mode & 0o044 == 0o044     # readable by others, not 0600
    assert paths.owner(out) == "model"

    damaged = tmp_path / "damaged"
    shutil.copytree(demo.shipped_base(), damaged)
    blob = bytearray((damaged / "model.safetensors").read_bytes())
    blob[-1] ^= 1
    (damaged / "model.safetensors").write_bytes(bytes(blob))
    monkeypatch.setattr(demo, "shipped_base", lambda: damaged)
    again = tmp_path / "again"
    refused = CliRunner().invoke(main, ["model", "demo-base", "--out", str(again)])
    assert refused.exit_code == 2, refused.output
    assert f"{damaged / 'model.safetensors'}: its sha256 is not the one" in refused.output
    assert not again.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".again")]
    with pytest.raises(TlfError, match="damaged"):
        demo.copy_shipped_base(tmp_path)


@pytest.mark.integration
def test_pretrain_builds_the_base_here_with_its_recipe_and_the_shipped_tokenizer(tmp_path):
    out = tmp_path / "base"
    done = run_while_progressing([tlf_bin(), "model", "demo-base", "--pretrain", "--out", out])
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "pre-trained here" in done.stdout
    provenance = _provenance(out)
    assert provenance["pretrain"] == demo.PRETRAIN and provenance["versions"]["torch"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*demo.BASE_FILES, demo.PROVENANCE, paths.MARKER])
    for name, digest in provenance["files"].items():
        assert sha256_file(out / name) == digest, name
    assert (out / "tokenizer.json").read_bytes() == (demo.shipped_base() / "tokenizer.json").read_bytes()
    losses = [e["loss"] for e in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "loss" in e]
    assert provenance["final_loss"] == losses[-1] < losses[0] / 3, losses   # it learnt the catalogue
