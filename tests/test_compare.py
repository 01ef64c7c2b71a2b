"""compare: paired tests of two prediction sets on the same questions, against hand-computed
cases and a simulation; `tlf score A --against B`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import tlf_bin

from telecom_lf import compare
from telecom_lf.errors import TlfError
from telecom_lf.score import Row


def _rows(rights: list[bool], label: str = "业务简介_111|9.9|开通方式_98", prompts: bool = True) -> list[Row]:
    return [Row(i + 1, label if right else "别的_9", label, f"问题{i}" if prompts else None)
            for i, right in enumerate(rights)]


def _outcomes(rights):
    return compare.Outcomes.of(_rows(rights))


def test_mcnemar_is_the_exact_binomial_on_the_discordant_pairs():
    """10 discordant questions, 8 only A got right and 2 only B: p = 2 * P(X >= 8 | n=10, 1/2)
    = 2 * (45 + 10 + 1) / 1024 = 0.109375; the concordant ones do not count."""
    a = np.array([True] * 8 + [False] * 2 + [True] * 30 + [False] * 60)
    b = np.array([False] * 8 + [True] * 2 + [True] * 30 + [False] * 60)
    p, only_a, only_b = compare.mcnemar(a, b)
    assert (only_a, only_b) == (8, 2)
    assert p == pytest.approx(112 / 1024, abs=1e-12)
    assert compare.mcnemar(a, a) == (1.0, 0, 0)
    # 10 of 10 one way: 2 / 1024
    assert compare.mcnemar(np.array([True] * 10), np.array([False] * 10))[0] == pytest.approx(2 / 1024)


def test_one_question_out_of_100_is_not_distinguishable_from_noise():
    a = _outcomes([True] * 51 + [False] * 49)
    b = _outcomes([True] * 50 + [False] * 50)
    result = compare.compare(a, b)["acc"]
    assert result["diff"] == 1.0 and result["p_value"] == 1.0
    assert result["diff_ci"][0] <= 0 < result["diff_ci"][1]   # one discordant question: 0 is inside
    assert compare.verdict(result) == "not distinguishable from noise at 5%"


def test_a_large_difference_is_distinguishable_and_its_interval_excludes_zero():
    a = _outcomes([True] * 90 + [False] * 10)
    b = _outcomes([True] * 50 + [False] * 50)
    result = compare.compare(a, b)["acc"]
    assert result["diff"] == 40.0 and result["p_value"] < 1e-6
    assert 25 < result["diff_ci"][0] < 40 < result["diff_ci"][1] < 55
    assert compare.verdict(result) == "distinguishable from noise at 5%"


def test_identical_outcomes_give_p_1_and_a_zero_interval_not_a_crash():
    same = _outcomes([True] * 30 + [False] * 70)
    for metric, entry in compare.compare(same, same).items():
        assert entry["p_value"] == 1.0 and entry["diff"] == 0.0 and entry["diff_ci"] == [0.0, 0.0], metric
    everything = _outcomes([True] * 100)
    assert compare.compare(everything, everything)["acc"]["diff_ci"] == [0.0, 0.0]


def test_the_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """Simulated: 100 questions, A right with p=0.6, B with p=0.5, independently per question. The
    paired percentile interval should hold the true 10 points in roughly 95 % of 300 experiments."""
    rng = np.random.default_rng(7)
    covered = 0
    trials = 300
    for trial in range(trials):
        a = rng.random(100) < 0.6
        b = rng.random(100) < 0.5
        low, high = compare.bootstrap_ci(a * 100.0, b * 100.0, seed=trial)
        covered += low <= 10.0 <= high
    assert 0.89 <= covered / trials <= 0.99, covered / trials


def test_the_interval_is_seeded_and_repeatable():
    a, b = _outcomes([True, False] * 50), _outcomes([True, True, False, False] * 25)
    assert compare.compare(a, b) == compare.compare(a, b)


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = compare.holm([0.01, 0.04, 0.03, None, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04)=0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, None, 0.02]) or adjusted[3] is None
    assert adjusted[3] is None and adjusted[4] == pytest.approx(0.02) and adjusted[1] == pytest.approx(0.06)
    assert compare.holm([0.9, 0.8]) == [1.0, 1.0]


def test_rows_are_matched_by_prompt_whatever_their_order():
    a = _rows([True, False, True, True])
    b = list(reversed(_rows([True, True, False, True])))
    pa, pb = compare.pair_rows(a, b)
    assert [r.prompt for r in pa] == [r.prompt for r in pb]


def test_different_questions_are_refused_naming_rows():
    a, b = _rows([True] * 5), _rows([True] * 5)
    b[3] = Row(4, "x", "y", "另一个问题")
    with pytest.raises(TlfError, match=r"1 of A's prompts are not in B \(lines 4\)"):
        compare.pair_rows(a, b)
    with pytest.raises(TlfError, match="at least 2 questions"):
        compare.pair_rows(a[:1], b[:1])
    no_prompts = _rows([True] * 4, prompts=False)
    with pytest.raises(TlfError, match="matched by position"):
        compare.pair_rows(no_prompts, no_prompts[:3])
    other = [Row(r.line, r.predict, "不同", None) for r in no_prompts]
    with pytest.raises(TlfError, match="different labels"):
        compare.pair_rows(no_prompts, other)


def _write(path, rights, prompts=True):
    with open(path, "w", encoding="utf-8") as handle:
        for row in _rows(rights, prompts=prompts):
            record = {"predict": row.predict, "label": row.label}
            if prompts:
                record["prompt"] = row.prompt
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def test_score_against_prints_the_verdict_and_writes_p_values_and_intervals(tmp_path):
    a = _write(tmp_path / "a.jsonl", [True] * 51 + [False] * 49)
    b = _write(tmp_path / "b.jsonl", [True] * 50 + [False] * 50)
    out = tmp_path / "cmp.json"
    done = subprocess.run([tlf_bin(), "score", a, "--against", b, "--json", out], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "not distinguishable from noise at 5%" in done.stdout and "acc" in done.stdout
    result = json.loads(out.read_text())
    for metric in ("acc", "long_recall", "rouge-1"):
        entry = result["metrics"][metric]
        assert 0 <= entry["p_value"] <= 1 and len(entry["diff_ci"]) == 2, metric
    assert result["questions"] == 100 and result["resamples"] >= 2000


@pytest.mark.parametrize("a_rows, b_rows, message", [
    ([True] * 5, [True] * 4, "prompts are not in"),
    ([True], [True], "at least 2 questions"),
])
def test_score_against_bad_pairs_exit_2_with_one_message(tmp_path, a_rows, b_rows, message):
    a = _write(tmp_path / "a.jsonl", a_rows)
    b = _write(tmp_path / "b.jsonl", b_rows)
    done = subprocess.run([tlf_bin(), "score", a, "--against", b], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = subprocess.run([tlf_bin(), "score", a, "--against", empty], capture_output=True, text=True)
    assert done.returncode == 2 and "no predictions to score" in done.stderr
