"""Validation against the installed LLaMA-Factory's own argument dataclasses, in-process."""

from __future__ import annotations

import pytest

from telecom_lf import lfargs

pytestmark = pytest.mark.unit


def test_the_table_is_read_from_llamafactorys_train_parser():
    table = lfargs.table()
    assert len(table) > 300
    assert table["lora_rank"].group == "FinetuningArguments" and table["lora_rank"].default == 8
    assert table["learning_rate"].default == 5e-5 and "float" in table["learning_rate"].kinds


@pytest.mark.parametrize("name,value,problem", [
    ("lora_rank", 128, None),
    ("learning_rate", 5.0e-5, None),
    ("learning_rate", "5e-5", "YAML 1.1 reads '5e-5' as a string"),
    ("lora_traget", "q_proj", "did you mean 'lora_target'"),
    ("lr_scheduler_type", "cosine", None),
    ("lr_scheduler_type", "cosinus", "is not one of"),
    ("use_dora", "yes", "expected bool"),
])
def test_check_value(name, value, problem):
    found = lfargs.check_value(name, value)
    assert (found is None) if problem is None else (problem in found), found
