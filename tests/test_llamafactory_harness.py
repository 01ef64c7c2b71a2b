"""The real LLaMA-Factory on the tiny local models: the blog's LoRA flags train and predict,
and a short full fine-tuning learns the synthetic task (template, label masking, saving and
decoding wired end to end)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import add_dataset, exact_match, run_llamafactory

pytestmark = pytest.mark.integration

# The blog's sft_single.sh flags, with rank/alpha scaled to a 64-wide model.
BLOG_LORA = {
    "finetuning_type": "lora",
    "lora_target": "q_proj,v_proj,k_proj",
    "lora_alpha": 16,
    "lora_rank": 8,
    "lora_dropout": 0.1,
    "loraplus_lr_ratio": 1.0,
    "loraplus_lr_embedding": 1.0e-6,
    "use_rslora": True,
    "use_dora": True,
    "create_new_adapter": True,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 8,
    "lr_scheduler_type": "cosine",
    "learning_rate": 5.0e-5,
    "num_train_epochs": 1.0,
}


def _common(model, dataset_dir, output_dir) -> dict:
    return {"model_name_or_path": str(model), "stage": "sft", "template": "default",
            "dataset_dir": str(dataset_dir), "cutoff_len": 128, "output_dir": str(output_dir),
            "report_to": "none", "seed": 42}


@pytest.mark.parametrize("arch", ["gemma", "llama"])
def test_blog_lora_flags_train_then_predict(arch, request, telecom_dir, tmp_path):
    model = request.getfixturevalue(f"tiny_{arch}")
    adapter = tmp_path / "adapter"
    train = {**_common(model, telecom_dir, adapter), "do_train": True, "dataset": "telecom_train_100",
             "logging_steps": 1, "plot_loss": True, "overwrite_output_dir": True, **BLOG_LORA}
    run_llamafactory(train, tmp_path, "train")

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0.1
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj"}
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    results = json.loads((adapter / "train_results.json").read_text())
    assert results["epoch"] == pytest.approx(1.0) and results["train_loss"] > 0
    log = [json.loads(line) for line in (adapter / "trainer_log.jsonl").read_text().splitlines()]
    assert log and log[-1]["current_steps"] == log[-1]["total_steps"]
    assert "trainable params" in (tmp_path / "train.log").read_text()

    predictions = tmp_path / "predict"
    predict = {**_common(model, telecom_dir, predictions), "do_predict": True,
               "predict_with_generate": True, "eval_dataset": "telecom_test_100",
               "adapter_name_or_path": str(adapter), "finetuning_type": "lora",
               "per_device_eval_batch_size": 4, "max_samples": 12, "max_new_tokens": 8,
               "do_sample": False, "overwrite_output_dir": True}
    run_llamafactory(predict, tmp_path, "predict")
    rows = [json.loads(line) for line in (predictions / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and set(rows[0]) == {"prompt", "predict", "label"}
    assert rows[0]["prompt"].startswith("Human: 回答中国电信手机用户的问题,")
    assert all(r["label"].endswith("\n") for r in rows)  # 0.9.5's default template: "{a}<eos>\n"
    metrics = json.loads((predictions / "predict_results.json").read_text())
    assert {"predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"} <= set(metrics)


def test_full_finetune_learns_the_synthetic_task(tiny_gemma, telecom_dir, tmp_path):
    """60 training rows, 40 epochs: greedy exact match on them must be far above chance."""
    rows = json.loads((telecom_dir / "telecom_train_400.json").read_text(encoding="utf-8"))[:60]
    add_dataset(tmp_path, "learn60", rows)
    model_out = tmp_path / "full"
    train = {**_common(tiny_gemma, tmp_path, model_out), "do_train": True, "dataset": "learn60",
             "finetuning_type": "full", "per_device_train_batch_size": 8, "learning_rate": 5.0e-3,
             "num_train_epochs": 40.0, "lr_scheduler_type": "cosine", "logging_steps": 10,
             "save_strategy": "no", "overwrite_output_dir": True}
    run_llamafactory(train, tmp_path, "train")
    predict = {**_common(model_out, tmp_path, tmp_path / "pred"), "do_predict": True,
               "predict_with_generate": True, "eval_dataset": "learn60", "finetuning_type": "full",
               "per_device_eval_batch_size": 8, "do_sample": False, "max_new_tokens": 32,
               "overwrite_output_dir": True}
    run_llamafactory(predict, tmp_path, "predict")
    accuracy = exact_match(tmp_path / "pred" / "generated_predictions.jsonl")
    # Chance: always answering the most frequent answer string.
    majority = Counter(r["output"] for r in rows).most_common(1)[0][1] / len(rows)
    assert majority < 0.1
    assert accuracy >= 0.5, f"exact match {accuracy:.2f} after 40 epochs; chance is {majority:.2f}"
