"""The keys of how a spec runs rather than what it studies: speed:, micro_batch:, dora_kernel:,
predict_mode: and tracking:, tracking_uri:. ``check`` is parse's checker (file:line errors)."""

from __future__ import annotations

from .. import guard
from ..cluster import tracking_uri_problem
from .model import Speed, Tracking
from .schema import DORA_KERNELS, PREDICT_MODES, SPEEDS, TRACKERS, SpeedKeys, TrackingKeys, default


def parse_speed(raw: dict, check) -> Speed:
    speed = raw.get("speed", default(SpeedKeys, "speed"))
    if speed not in SPEEDS:
        check.fail(("speed",), f"expected one of {list(SPEEDS)}, got {speed!r}")
    micro_batch = raw.get("micro_batch")
    if micro_batch is not None and check.guarded(("micro_batch",), guard.integer, micro_batch, "", 1, 1_000_000):
        if speed != "fast":
            check.fail(("micro_batch",), "micro_batch sets the `speed: fast` profile's micro-batch; add speed: fast "
                                         "(as written, the micro-batch is train.per_device_train_batch_size)")
    dora_kernel = raw.get("dora_kernel")
    if dora_kernel is not None and dora_kernel not in DORA_KERNELS:
        check.fail(("dora_kernel",), f"expected one of {list(DORA_KERNELS)}, got {dora_kernel!r}")
    predict_mode = raw.get("predict_mode", default(SpeedKeys, "predict_mode"))
    if predict_mode not in PREDICT_MODES:
        check.fail(("predict_mode",), f"expected one of {list(PREDICT_MODES)}, got {predict_mode!r}")
    return Speed(
        mode=speed, micro_batch=micro_batch, dora_kernel=dora_kernel or ("fast" if speed == "fast" else "peft"),
        predict_mode=predict_mode,
    )




# Training arguments that `tracking:` writes itself, per tracker.
TRACKING_ARGUMENTS = {"mlflow": ("report_to", "run_name"), "tensorboard": ("report_to", "logging_dir")}


def parse_tracking(raw: dict, train: dict | None, check) -> Tracking:
    kind = raw.get("tracking", default(TrackingKeys, "tracking"))
    kind = "none" if kind is None else kind
    if kind not in TRACKERS:
        check.fail(("tracking",), f"expected one of {list(TRACKERS)}, got {kind!r}")
        return Tracking()
    uri = raw.get("tracking_uri")
    if uri is not None:
        if kind != "mlflow":
            check.fail(("tracking_uri",), "tracking_uri is where tracking: mlflow logs; add tracking: mlflow")
        elif check.guarded(("tracking_uri",), guard.text, uri, "", "tracking URI") is not None \
                and (problem := tracking_uri_problem(uri)):
            check.fail(("tracking_uri",), problem)
    for argument in TRACKING_ARGUMENTS.get(kind, ()):
        if argument in (train or {}):
            check.fail(("train", argument), f"tracking: {kind} sets {argument} itself (one tracker run per tlf run); "
                                            f"remove it from train:, or set tracking: none and keep it")
    return Tracking(kind=kind, uri=uri)


