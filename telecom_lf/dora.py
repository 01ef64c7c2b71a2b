"""A faster DoRA step for PEFT's LoRA Linear layers: same mathematics, less host work.

PEFT 0.18's DoRA step (``DoraLinearVariant.forward`` calling ``DoraLinearLayer.forward``) does,
on every call (forward, and again when gradient
checkpointing recomputes it): build an identity matrix to get B·A through the LoRA modules,
cast the frozen weight to the input's dtype, materialise W + s·B·A (out x in) and take its row
norms, which it then detaches. This forward computes the same row norms from factors,

    ||W_i + s(BA)_i||^2 = ||W_i||^2 + 2s <B_i, (W A^T)_i> + s^2 <B_i, (B (A A^T))_i>,

in fp32 with autocast off, keeps ||W_i||^2 of the frozen weight, and reuses the detached norm
until the next optimiser step (or an in-place change of A or B), so the micro-batches of one
optimiser step and the recompute under gradient checkpointing share it, regroups the step's
arithmetic into fewer operations, and takes its products on the rows flattened to 2-D (what
``F.linear`` does inside, without its per-call reshapes and transposes). The magnitude's
gradient, dropout, the extra product of the frozen weight with the dropped-out input, and the
base result reused when dropout is off stay as PEFT has them. Under ``torch.compile`` the norm
is recomputed in the traced graph (no Python cache) and nothing breaks the graph.

Installed by ``tlf-lf`` in every process when the rendered config asks for it (``speed: fast``
unless the spec says ``dora_kernel: peft``), and only on the PEFT version it was tested with;
anything it does not cover (quantised or transposed weights, a LoRA bias, hooks on the LoRA
modules as DeepSpeed ZeRO-3 sets, an input not in the adapter's dtype) goes to PEFT's own step.
In PEFT 0.18.1 the variant's step is the only caller of ``DoraLinearLayer.forward`` for Linear
layers, so replacing the step alone is enough.
"""

from __future__ import annotations

import sys

from .rundir import header_marker

TESTED_PEFT = ("0.18.1",)
KEY = "dora_kernel"         # in a rendered config's header comment: # tlf-lf: dora_kernel=fast
_original_variant_forward = None
# Optimiser steps taken in this process. Fused optimisers (transformers' default AdamW on torch
# >= 2.8) update parameters without bumping their version counters, so the version alone cannot
# say that A or B changed; every torch.optim step bumps this through a global post-step hook.
_optimiser_steps = [0]
_hook = None


def _count_step(_optimizer, _args, _kwargs) -> None:
    _optimiser_steps[0] += 1


def _weight_of(base_layer):
    """The plain weight of an nn.Linear, or None where PEFT's own path is needed."""
    import torch

    weight = getattr(base_layer, "weight", None)
    if type(base_layer) is not torch.nn.Linear or type(weight) is not torch.nn.Parameter:
        return None
    return weight


def _of_frozen_weight(layer, name: str, weight, compute):
    """``compute(weight)`` (no grad), kept on ``layer`` until the frozen weight itself changes;
    under ``torch.compile``, computed in the traced graph (no Python cache)."""
    import torch

    if torch.compiler.is_compiling():
        return compute(weight)
    key = (weight.data_ptr(), weight._version, weight.shape)
    cached = getattr(layer, name, None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, compute(weight))
        setattr(layer, name, cached)
    return cached[1]


def _squared_row_norms(layer, weight):
    """||W_i||^2 of the frozen weight in fp32."""
    return _of_frozen_weight(layer, "_tlf_w_norms", weight, lambda w: w.float().pow(2).sum(1))


def factored_weight_norm(weight, lora_a, lora_b, scaling, w_squared):
    """Row norms of W + s B A without forming the out x in matrix (fp32, no grad):
    ||W_i + s(BA)_i||^2 = ||W_i||^2 + s <B_i, (2 W A^T + s B (A A^T))_i>, all out x r."""
    import torch

    with torch.no_grad(), torch.autocast(device_type=weight.device.type, enabled=False):
        a = lora_a if lora_a.dtype == torch.float32 else lora_a.float()
        b = lora_b if lora_b.dtype == torch.float32 else lora_b.float()
        w = weight if weight.dtype == torch.float32 else weight.float()
        a_t = a.t()
        inner = torch.addmm(w @ a_t, b, a @ a_t, beta=2, alpha=scaling)
        return torch.add(w_squared, (inner * b).sum(1), alpha=scaling).clamp_min_(0).sqrt_()


def _weight_norm(layer, weight, lora_A, lora_B, scaling, dtype):
    """The detached norm, computed once per value of A and B (one optimiser step)."""
    import torch

    a, b = lora_A.weight, lora_B.weight
    if torch.compiler.is_compiling():
        return factored_weight_norm(weight, a, b, scaling, _squared_row_norms(layer, weight)).to(dtype)
    key = (_optimiser_steps[0], a.data_ptr(), a._version, b.data_ptr(), b._version, float(scaling), dtype,
           weight.data_ptr(), weight._version)
    cached = getattr(layer, "_tlf_norm", None)
    if cached is None or cached[0] != key:
        norm = factored_weight_norm(weight, a, b, scaling, _squared_row_norms(layer, weight))
        norm = norm if norm.dtype == dtype else norm.to(dtype)
        cached = (key, norm)
        layer._tlf_norm = cached
    return cached[1]


def _frozen_weight_t(layer, weight):
    """W^T (a view) of the frozen weight."""
    return _of_frozen_weight(layer, "_tlf_w_t", weight, lambda w: w.detach().transpose(0, 1))


def _plain_linear(module) -> bool:
    """An nn.Linear without bias or hooks, whose product tlf may take on its weight directly."""
    import torch

    return (type(module) is torch.nn.Linear and module.bias is None
            and not (module._forward_hooks or module._forward_pre_hooks))


def fast_variant_forward(module, active_adapter, x, result, **kwargs):
    """PEFT's ``DoraLinearVariant.forward`` (the LoRA layer's DoRA step) in fewer operations.

    ``result + (g - 1) * base + g * s * lora`` (g = magnitude / norm) is regrouped as
    ``g * (result + s * lora)`` when the base result is reused (dropout off, or eval), and
    ``(result - base) + g * (base + s * lora)`` on dropped-out inputs: same terms. The products
    are taken on the rows flattened to 2-D, as ``F.linear`` itself does inside, without its
    per-call reshapes and transposes (the frozen weight's transpose is kept). (An ``addmm`` for
    ``base + s (x A^T) B^T`` was slower on the CPU: it scales the (rows x r) gradient.)"""
    import torch

    dora_layer = module.lora_magnitude_vector[active_adapter]
    base_layer = module.get_base_layer()
    weight = _weight_of(base_layer)
    lora_A, lora_B = module.lora_A[active_adapter], module.lora_B[active_adapter]
    if (weight is None or dora_layer.fan_in_fan_out or not _plain_linear(lora_A) or not _plain_linear(lora_B)
            or not x.dtype == lora_A.weight.dtype == lora_B.weight.dtype):
        return _original_variant_forward(module, active_adapter=active_adapter, x=x, result=result, **kwargs)
    dropout, scaling = module.lora_dropout[active_adapter], module.scaling[active_adapter]
    # (out,) broadcasts over the last dimension: PEFT's .view(1, -1) is not needed
    scale = dora_layer.weight / _weight_norm(dora_layer, weight, lora_A, lora_B, scaling, x.dtype)
    a_t, b_t = lora_A.weight.transpose(0, 1), lora_B.weight.transpose(0, 1)
    rows = result.shape[:-1]
    result = result.reshape(-1, result.shape[-1])
    if isinstance(dropout, torch.nn.Identity) or not module.training:
        lora = torch.mm(torch.mm(x.reshape(-1, x.shape[-1]), a_t), b_t)
        bias = base_layer.bias
        if bias is None:
            out = scale * torch.add(result, lora, alpha=scaling)
        else:
            out = torch.addcmul(bias, scale, torch.add(result - bias, lora, alpha=scaling))
        return out.view(*rows, out.shape[-1])
    x = dropout(x)
    x = x.reshape(-1, x.shape[-1])
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        base = torch.mm(x, _frozen_weight_t(dora_layer, weight))
    else:
        base = torch.mm(x, weight.to(x.dtype).transpose(0, 1))
    lora = torch.mm(torch.mm(x, a_t), b_t)
    out = torch.addcmul(result - base, scale, torch.add(base, lora, alpha=scaling))
    return out.view(*rows, out.shape[-1])


def install(wanted: bool) -> str | None:
    """Put the fast forward in place (or PEFT's back); returns a line saying why it is off when
    it was wanted but the installed PEFT is not the tested one."""
    global _original_variant_forward, _hook
    from importlib import metadata

    from peft.tuners.lora.variants import DoraLinearVariant

    if _original_variant_forward is None:
        _original_variant_forward = DoraLinearVariant.forward
    if _hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _hook = register_optimizer_step_post_hook(_count_step)
    version = metadata.version("peft")
    use = wanted and version in TESTED_PEFT
    DoraLinearVariant.forward = staticmethod(fast_variant_forward if use else _original_variant_forward)
    if wanted and not use:
        return (f"tlf: fast DoRA forward off: written and tested for peft {', '.join(TESTED_PEFT)}, "
                f"found {version}; PEFT's own DoRA forward is used")
    return None


def wanted_by(config_path: str | None) -> bool:
    """Whether a rendered config's header asks for the fast forward (``# tlf-lf: dora_kernel=fast``)."""
    return header_marker(config_path, KEY) == "fast"


def install_for(config_path: str | None) -> None:
    wanted = wanted_by(config_path)
    message = install(wanted)
    if message or wanted:
        print(message or "tlf: fast DoRA forward on (dora_kernel=fast in the config's header)", file=sys.stderr)
