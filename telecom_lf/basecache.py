"""One base model read from disk once per process (``predict_mode: shared``).

LLaMA-Factory's predict loads the base model from disk for every config, then merges the run's
adapter into it. In a process that predicts many runs of one base (``tlf-lf serve`` under
``tlf run``; ``tlf-lf select`` over a run's checkpoints), the first load is kept as a pristine
copy on the CPU and every later identical load gets a copy of that, moved to the device the
load would have used: reading and initialising happen once, each run's merge changes only its
own copy. The weights are the same bytes, so the predictions are the same as per-run loading
(tests/test_basecache.py compares them byte for byte for LoRA, rsLoRA, DoRA and a full fine-tune).

Only identical loads share: the key is every argument LLaMA-Factory's loader passes to
``from_pretrained``, the patched config, and the size and modification time of each file in the
model's directory. A quantised model, or one spread over several devices, is loaded as usual.
One base is kept (the last one read); a full fine-tune's predict reads its own weights, which
are not kept (nothing else loads them).
"""

from __future__ import annotations

import copy
import json
import os
import sys

from .rundir import SHARE_BASE_ENV

_original = None
_kept: dict = {}           # key -> the pristine model, on the CPU


def install_for(config_path: str | None) -> None:
    """Share loads for this config when the process was started with TLF_SHARE_BASE=1 and the
    config predicts with an adapter (a full fine-tune's predict reads its own weights). A
    process that never shares never imports the loader here (tlf-lf version stays light)."""
    global _original
    wanted = _wanted(config_path)
    if not wanted and _original is None:
        return
    from llamafactory.model import loader

    if _original is None:
        _original = loader.AutoModelForCausalLM
    loader.AutoModelForCausalLM = _shared_class() if wanted else _original


def _wanted(config_path: str | None) -> bool:
    if os.environ.get(SHARE_BASE_ENV) != "1" or not config_path:
        return False
    import yaml

    try:
        with open(config_path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and not config.get("do_train") and bool(config.get("adapter_name_or_path"))


def _shared_class():
    original = _original

    class SharedBase(original):   # LLaMA-Factory's loader calls load_class.from_pretrained(**kwargs)
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return load(original, args, kwargs)

    SharedBase.__name__ = original.__name__
    return SharedBase


def load(original, args: tuple, kwargs: dict):
    key = _key(args, kwargs)
    path = kwargs.get("pretrained_model_name_or_path", args[0] if args else None)
    if key is not None and key in _kept:
        model = copy.deepcopy(_kept[key])
        device = _device_wanted(kwargs)
        if device is not None and device != "cpu":
            model = model.to(device)
        print(f"tlf: base model {path}: an in-memory copy of the one read earlier in this process "
              "(predict_mode: shared)", file=sys.stderr, flush=True)
        return model
    model = original.from_pretrained(*args, **kwargs)
    devices = {p.device.type + (f":{p.device.index}" if p.device.index is not None else "")
               for p in model.parameters()}
    if key is not None and len(devices) == 1:
        _kept.clear()
        _kept[key] = copy.deepcopy(model).to("cpu") if devices != {"cpu"} else copy.deepcopy(model)
        print(f"tlf: base model {path}: read from disk, kept in memory for this process's next predicts "
              "(predict_mode: shared)", file=sys.stderr, flush=True)
    return model


def _device_wanted(kwargs: dict) -> str | None:
    device_map = kwargs.get("device_map")
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device = device_map[""]
        return str(device) if not isinstance(device, int) else f"cuda:{device}"
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "sequential"):
        return device_map
    return None


def _key(args: tuple, kwargs: dict) -> str | None:
    config = kwargs.get("config")
    if kwargs.get("quantization_config") or getattr(config, "quantization_config", None):
        return None
    if kwargs.get("device_map") is not None and _device_wanted(kwargs) is None:
        return None     # spread over devices (auto): loaded as usual
    path = kwargs.get("pretrained_model_name_or_path", args[0] if args else None)
    files = []
    if path is not None and os.path.isdir(path):
        with os.scandir(path) as entries:
            files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file())
    arguments = {k: repr(v) for k, v in sorted(kwargs.items()) if k != "config"}
    return json.dumps([repr(args), arguments, config.to_json_string() if config is not None else None,
                       getattr(config, "_attn_implementation", None), files])
