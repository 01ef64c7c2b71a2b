"""What a run changes against the installed LLaMA-Factory's defaults (``tlf diff``)."""

from __future__ import annotations

import pandas as pd

from . import lfargs
from .plan import RunPlan
from .render import predict_config, train_config
from .spec import Spec


def _effective_default(name: str, config: dict):
    """Defaults that LLaMA-Factory derives in __post_init__ rather than declaring."""
    table = lfargs.table()
    if name == "lora_alpha":
        return config.get("lora_rank", table["lora_rank"].default) * 2
    return table[name].default


def table(spec: Spec, run: RunPlan, show_all: bool = False) -> pd.DataFrame:
    """One row per argument the rendered configs set: value, default, whether it differs."""
    from .render import layout

    run_dir = layout(spec, spec.path.parent / "runs").run_dir(run)
    rows = []
    configs = []
    if run.train_args is not None:
        configs.append(("train", train_config(spec, run, run_dir)))
    for dataset in spec.predict_sets[:1]:
        configs.append(("predict", predict_config(spec, run, run_dir, dataset)))
    for stage, config in configs:
        for name, value in config.items():
            info = lfargs.table().get(name)
            if info is None:
                continue
            declared = info.default
            effective = _effective_default(name, config)
            differs = value != effective
            if not differs and not show_all:
                continue
            note = f"None -> {effective} (2 x lora_rank)" if name == "lora_alpha" and declared is None else ""
            rows.append({"stage": stage, "argument": name, "value": value,
                         "llamafactory default": declared, "differs": "*" if differs else "",
                         "note": note or info.group})
    return pd.DataFrame(rows, columns=["stage", "argument", "value", "llamafactory default", "differs", "note"])
