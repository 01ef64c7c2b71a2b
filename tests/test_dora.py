"""tlf's fast DoRA forward (telecom_lf/dora.py) against PEFT's own, on the tiny model: the same
losses and parameters over 20 optimiser steps, fewer operations, a graph torch.compile traces."""

from __future__ import annotations

import pytest
import torch

from telecom_lf import dora

# unit unless marked otherwise (conftest: kinds are exclusive)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(autouse=True)
def peft_forward_afterwards():
    yield
    _install(False)


def _install(fast: bool) -> None:
    """Put the forward under test in place, and check it is there: on a PEFT that tlf's forward
    was not tested with, install(True) keeps PEFT's and says so, and both arms would be PEFT's."""
    from peft.tuners.lora.variants import DoraLinearVariant

    assert dora.install(fast) is None, "tlf's DoRA forward refused this PEFT: the comparison would be PEFT with itself"
    assert (DoraLinearVariant.forward is dora.fast_variant_forward) == fast


def _model(tiny_gemma, rslora: bool, dropout: float, checkpointing: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, use_rslora=rslora,
                                             use_dora=True, target_modules=TARGETS))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.train()


def _train(tiny_gemma, fast: bool, rslora: bool, dropout: float, steps: int = 20, loraplus_ratio: float = 1.0,
           autocast: torch.dtype | None = None, checkpointing: bool = False, fused: bool = True):
    """20 optimiser steps of 2 micro-batches (gradient accumulation, as LLaMA-Factory does),
    LoRA+'s learning-rate ratio on B; returns the loss per step and the trainable parameters.
    Fused AdamW by default: transformers' default on this torch, and it updates parameters
    without bumping their version counters."""
    _install(fast)
    model = _model(tiny_gemma, rslora, dropout, checkpointing)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in trainable if "lora_B" not in n], "lr": 1e-3},
        {"params": [p for n, p in trainable if "lora_B" in n], "lr": 1e-3 * loraplus_ratio}], fused=fused)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(3, 700, (4, 24), generator=generator) for _ in range(2)]   # learnable: seen again
    losses = []
    for _ in range(steps):
        for ids in batches:
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = model(input_ids=ids, labels=ids).loss
            (loss / 2).backward()
        losses.append(loss.item())
        optimizer.step()
        optimizer.zero_grad()
    return losses, {n: p.detach().clone() for n, p in trainable}


@pytest.mark.parametrize("rslora", [True, False])
@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_same_losses_and_parameters_as_pefts_dora_in_fp32(tiny_gemma, rslora, dropout):
    peft_losses, peft_params = _train(tiny_gemma, False, rslora, dropout)
    fast_losses, fast_params = _train(tiny_gemma, True, rslora, dropout)
    assert peft_losses[-1] < peft_losses[0]  # it trains
    for peft_loss, fast_loss in zip(peft_losses, fast_losses):
        assert abs(fast_loss - peft_loss) <= 1e-5 * abs(peft_loss)
    for name, expected in peft_params.items():
        # Relative in norm. Adam turns rounding-level differences of the norm into larger ones in
        # the parameters: PEFT against itself with its norm moved by one ulp (x (1 + 2^-23))
        # differs by up to 4.4e-6 here, tlf's factored norm (a few ulps) by up to 1.04e-5.
        difference = (fast_params[name] - expected).norm() / expected.norm()
        assert difference <= 2e-5, (name, difference.item())
        assert fast_params[name].dtype == expected.dtype


class _Block(torch.nn.Module):
    def __init__(self, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.q_proj = torch.nn.Linear(32, 48, bias=bias, dtype=dtype)

    def forward(self, x):
        return self.q_proj(x)


def _outputs_and_gradients(fast: bool, bias: bool, dropout: float, training: bool, base_dtype=torch.float32):
    from peft import LoraConfig, get_peft_model

    _install(fast)
    torch.manual_seed(0)
    block = get_peft_model(_Block(bias, base_dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                                use_dora=True, target_modules=["q_proj"]))
    layer = block.base_model.model.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()   # B starts at zero: make the adapter do something
    block.train(training)
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(2), dtype=base_dtype, requires_grad=True)
    torch.manual_seed(3)                            # the same dropout mask for both forwards
    out = block(x)
    if not training:
        return out.detach(), {}
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), {"x": x.grad, **{n: p.grad for n, p in block.named_parameters() if p.requires_grad}}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dropout, training", [(0.1, True), (0.0, True), (0.1, False)])
def test_one_layer_output_and_every_gradient_equal_pefts(bias, dropout, training):
    """Each branch of the step (dropped-out input, reused base result, eval) with and without a
    base bias: the output and the gradients of the input, A, B and the magnitude."""
    peft_out, peft_grads = _outputs_and_gradients(False, bias, dropout, training)
    fast_out, fast_grads = _outputs_and_gradients(True, bias, dropout, training)
    assert torch.allclose(fast_out, peft_out, rtol=1e-5, atol=1e-6)
    assert peft_grads.keys() == fast_grads.keys()
    for name, expected in peft_grads.items():
        assert torch.allclose(fast_grads[name], expected, rtol=1e-5, atol=1e-6), name
    assert len(peft_grads) == (4 if training else 0)   # x, A, B, magnitude; the bias is frozen


def test_a_half_precision_base_under_an_fp32_adapter_without_autocast():
    """Predict-like: a bf16 base layer, PEFT's fp32 adapter, eval, no autocast (add promotes)."""
    peft_out, _ = _outputs_and_gradients(False, False, 0.0, False, base_dtype=torch.bfloat16)
    fast_out, _ = _outputs_and_gradients(True, False, 0.0, False, base_dtype=torch.bfloat16)
    assert fast_out.dtype == peft_out.dtype
    assert torch.allclose(fast_out.float(), peft_out.float(), rtol=2e-2, atol=2e-2)


def test_loraplus_ratio_and_gradient_checkpointing(tiny_gemma):
    """Checkpointing recomputes the forward in backward: the reused norm must be the same one."""
    peft_losses, peft_params = _train(tiny_gemma, False, True, 0.1, steps=8, loraplus_ratio=16.0, checkpointing=True,
                                      fused=False)
    fast_losses, fast_params = _train(tiny_gemma, True, True, 0.1, steps=8, loraplus_ratio=16.0, checkpointing=True,
                                      fused=False)
    assert all(abs(f - p) <= 1e-5 * abs(p) for f, p in zip(fast_losses, peft_losses))
    assert all((fast_params[n] - p).norm() <= 1e-5 * p.norm() for n, p in peft_params.items())


def test_bf16_autocast_loss_curve_agrees(tiny_gemma):
    peft_losses, _ = _train(tiny_gemma, False, True, 0.1, steps=10, autocast=torch.bfloat16)
    fast_losses, _ = _train(tiny_gemma, True, True, 0.1, steps=10, autocast=torch.bfloat16)
    # bf16 keeps ~3 significant digits; PEFT rounds B·A to bf16 before its norm, tlf does not
    assert all(abs(f - p) <= 1e-3 * abs(p) for f, p in zip(fast_losses, peft_losses)), (peft_losses, fast_losses)


def test_the_norm_is_computed_once_per_optimiser_step_and_without_an_identity(tiny_gemma):
    _install(True)
    model = _model(tiny_gemma, True, 0.0)
    ids = torch.randint(3, 700, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.profiler.profile() as warm:
        model(input_ids=ids, labels=ids).loss.backward()
    with torch.profiler.profile() as again:   # same step: A and B unchanged
        model(input_ids=ids, labels=ids).loss.backward()
    ops = lambda profile: [e.name.rstrip("_") for e in profile.events()]   # sqrt_ counts as sqrt
    assert "aten::eye" not in ops(warm) and "aten::eye" not in ops(again)
    assert ops(warm).count("aten::sqrt") >= len(TARGETS) * 2  # one norm per adapted layer
    assert "aten::sqrt" not in ops(again)                      # reused within the step
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    with torch.profiler.profile() as stepped:
        model(input_ids=ids, labels=ids).loss.backward()
    assert ops(stepped).count("aten::sqrt") >= len(TARGETS) * 2  # B and A changed: a new norm


def test_torch_compile_traces_the_forward_without_graph_breaks(tiny_gemma):
    _install(True)
    model = _model(tiny_gemma, True, 0.1)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features)
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    _install(False)
    torch._dynamo.reset()
    assert torch._dynamo.explain(layer)(x).graph_break_count > 0   # PEFT's own forward breaks (str.startswith)


def test_other_peft_versions_keep_pefts_forward(monkeypatch):
    from importlib import metadata

    from peft.tuners.lora.variants import DoraLinearVariant

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.99.0" if name == "peft" else real(name))
    message = dora.install(True)
    assert message and "found 0.99.0" in message and "0.18.1" in message
    assert DoraLinearVariant.forward is not dora.fast_variant_forward
    monkeypatch.setattr(metadata, "version", real)
    assert dora.install(True) is None and DoraLinearVariant.forward is dora.fast_variant_forward


def test_the_rendered_header_asks_for_it(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("# Rendered by tlf\n# tlf-lf: dora_kernel=fast (tlf's DoRA forward)\n\nuse_dora: true\n")
    assert dora.wanted_by(str(config))
    config.write_text("# tlf-lf: dora_kernel=peft\nuse_dora: true\n")
    assert not dora.wanted_by(str(config))
    config.write_text("use_dora: true\n# tlf-lf: dora_kernel=fast\n")   # only the header counts
    assert not dora.wanted_by(str(config)) and not dora.wanted_by(None)


@pytest.mark.integration
def test_llamafactory_trains_the_blog_flags_the_same_with_either_forward(tiny_gemma, telecom_dir, tmp_path):
    """Through the real LLaMA-Factory (tlf-lf on rendered configs): the blog's DoRA + rsLoRA +
    dropout flags under speed: fast, once with tlf's forward and once with PEFT's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    losses = {}
    for kernel in ("fast", "peft"):
        spec = tmp_path / f"{kernel}.yaml"
        spec.write_text(f"""name: {kernel}
model: {tiny_gemma}
data: {{dir: {telecom_dir}, train: telecom_train_100}}
template: default
speed: fast
dora_kernel: {kernel}
train: {{lora_target: "q_proj,v_proj,k_proj", lora_rank: 8, lora_alpha: 16, lora_dropout: 0.1, use_rslora: true,
         use_dora: true, per_device_train_batch_size: 8, gradient_accumulation_steps: 2, learning_rate: 2.0e-3,
         num_train_epochs: 2.0, cutoff_len: 128, logging_steps: 1, dataloader_num_workers: 0}}
""")
        subprocess.run([str(Path(sys.executable).parent / "tlf"), "render", str(spec), "--out", str(tmp_path / "runs")],
                       check=True, capture_output=True)
        config = tmp_path / "runs" / kernel / kernel / "train.yaml"
        assert ("dora_kernel=fast" in config.read_text()) == (kernel == "fast")
        done = subprocess.run([str(Path(sys.executable).parent / "tlf-lf"), "train", str(config)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("fast DoRA forward on" in done.stderr) == (kernel == "fast")
        log = (config.parent / "train" / "trainer_log.jsonl").read_text().splitlines()
        losses[kernel] = [json.loads(line)["loss"] for line in log if "loss" in json.loads(line)]
    assert len(losses["fast"]) == len(losses["peft"]) >= 10
    assert all(abs(f - p) <= 1e-4 * abs(p) for f, p in zip(losses["fast"], losses["peft"])), losses
