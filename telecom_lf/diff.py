"""What a run changes against the installed LLaMA-Factory's defaults (``tlf diff``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import lfargs
from .plan import RunPlan
from .render import layout, predict_config, train_config
from .spec import Spec


def _effective_default(name: str, config: dict):
    """Defaults that LLaMA-Factory derives in __post_init__ rather than declaring."""
    table = lfargs.table()
    if name == "lora_alpha":
        return config.get("lora_rank", table["lora_rank"].default) * 2
    return table[name].default


def table(spec: Spec, run: RunPlan, out: Path, show_all: bool = False) -> pd.DataFrame:
    """One row per argument the rendered configs set: value, default, whether it differs, and
    where the value came from. ``out`` is the runs root, as for ``tlf render --out``."""
    run_dir = layout(spec, out).run_dir(run.name)
    configs = []
    if run.train_args is not None:
        configs.append(("train", train_config(spec, run, run_dir)))
    for dataset in spec.data.predict[:1]:
        configs.append(("predict", predict_config(spec, run, run_dir, dataset)))
    rows = []
    for stage, config in configs:
        values = config.values()
        for name, (value, origin) in config.items():
            info = lfargs.table().get(name)
            if info is None:
                continue
            effective = _effective_default(name, values)
            differs = value != effective
            if differs or show_all:
                derived = name == "lora_alpha" and info.default is None
                default = f"None -> {effective} (2 x lora_rank)" if derived else info.default
                rows.append({"stage": stage, "argument": name, "value": value, "llamafactory default": default,
                             "differs": "*" if differs else "", "origin": origin})
    if spec.prompt.mode == "blog" and spec.data.predict:
        # Not an argument of LLaMA-Factory: tlf-lf applies it from the predict config's header.
        rows.append({"stage": "predict", "argument": "clean_up_tokenization_spaces (predictions)", "value": True,
                     "llamafactory default": "the tokenizer's own (False for Gemma)", "differs": "*",
                     "origin": "tlf: LLaMA-Factory 0.6's decoding (prompt: blog), via tlf-lf"})
    return pd.DataFrame(rows, columns=["stage", "argument", "value", "llamafactory default", "differs", "origin"])
