"""An experiment spec (YAML) -> a validated ``Spec``. Every error names the file, line and key.

A spec is flat and hackable, torchtune-style: LLaMA-Factory arguments by their own names under
``train:`` and ``predict:``, and a handful of tlf keys around them. See experiments/ for
annotated examples and the README for the full list.
"""

from __future__ import annotations

from .model import Cluster, Data, Prompt, Spec, Speed, Sweep, Tie
from .parse import apply_overrides, load
from .schema import (
                     SELECT_METRICS,
                     TOP_KEYS,
                     ClusterKeys,
                     DataKeys,
                     ExperimentKeys,
                     PromptKeys,
                     Select,
                     SpeedKeys,
                     SweepKeys,
                     default,
                     schema_markdown,
                     schema_rows,
)

__all__ = ["SELECT_METRICS", "TOP_KEYS", "Cluster", "ClusterKeys", "Data", "DataKeys", "ExperimentKeys", "Prompt",
           "PromptKeys", "Select", "Spec", "Speed", "SpeedKeys", "Sweep", "SweepKeys", "Tie", "apply_overrides",
           "default", "load", "schema_markdown", "schema_rows"]
