"""A peer's `arch`, parsed and bounded without torch: the node vets every manifest here before storing it.

A manifest's `arch` is the owner's word, signed but not checked by anyone else. `factory_config` and
`expert_spec` turn it into this version's configs, and anything wrong with it becomes a LoadError naming the
artifact, so callers leave that one artifact out instead of failing. `vet` runs before a manifest is even
stored: it sizes the model the arch describes from the config alone (ffnode/factory/config.py,
ffnode/expert/config.py: torch's own counts, checked by tests/test_arch.py) and refuses one whose parameters,
sampler steps or declared blob size exceed the node's limits, so a small signed manifest cannot make the node
build a 37 GiB model or fetch 4 GiB for one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

from ffnode.artifacts.blob import MAX_HEADER_BYTES
from ffnode.artifacts.codec import WireError, canonical_bytes, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import LimitsConfig
from ffnode.expert.config import ExpertConfig, expert_size
from ffnode.factory.config import FactoryConfig, unet_size

MAX_IMAGE_SIDE = 512  # pixels: the largest image a factory or expert of this version may be made for
MAX_CHANNELS = 4
MAX_TIMESTEPS = 10_000  # a factory's num_train_timesteps
MAX_LEVELS = 6  # UNet levels (the profiles use 2 or 3)
MAX_WIDTH = 1024  # channels of one level or of an expert's first stage (the gpu profile: 128 and 64)


class Named(Protocol):
    """What names an artifact in an error: a manifest, or a job's source of one (jobs/spec.py)."""

    kind: str
    id: str
    owner: str


class LoadError(ValueError):
    """An artifact that cannot be turned into a working module; the message says which and why."""

    def __init__(self, m: Named, reason: str) -> None:
        super().__init__(f"{m.kind} {m.id[:12]} of {m.owner}: {reason}")
        self.artifact_id, self.reason = m.id, reason


def held_blob(store: Store, m: Manifest) -> Path:
    """The path of the artifact's blob; LoadError if it is no longer held (revoked, dropped)."""
    try:
        return store.blob_file(m)
    except KeyError as exc:
        raise LoadError(m, str(exc.args[0])) from None


def factory_config(m: Manifest) -> FactoryConfig:
    """The factory's config from its manifest (no weights read)."""
    try:
        return FactoryConfig.from_dict(m.arch)
    except (TypeError, ValueError) as exc:
        raise LoadError(m, f"its config is not understood ({exc})") from None


def expert_spec(m: Manifest) -> tuple[ExpertConfig, int, tuple[int, int, int]]:
    """An expert's (config, number of classes, image shape (H, W, C)) from its manifest."""
    try:
        arch = m.arch
        cfg = ExpertConfig.from_dict(arch["expert"])
        num_classes, shape = arch["num_classes"], arch["image_shape"]
        if not isinstance(shape, list):
            raise TypeError(f"image_shape is a {type(shape).__name__}, not an array")
        shape = tuple(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(m, f"its arch is not understood ({exc!r})") from None
    if type(num_classes) is not int or len(shape) != 3 or not all(type(x) is int and x > 0 for x in shape):
        raise LoadError(m, f"num_classes {num_classes!r} and image_shape {list(shape)!r} are not sizes")
    return cfg, num_classes, shape  # type: ignore[return-value]


def vet(m: Manifest, limits: LimitsConfig) -> None:
    """WireError if the artifact's arch is not understood or costs more than `limits` allow."""
    try:
        params, tensor_bytes = _arch_cost(m.kind, canonical_bytes(m.arch))
    except LoadError as exc:
        raise WireError(f"{m.kind} {m.id[:12]}: {exc.reason}") from None
    cap = limits.factory_params if m.kind == "factory" else limits.expert_params
    if params > cap:
        raise WireError(f"{m.kind} {m.id[:12]} has {params:,} parameters: over this node's limit of {cap:,}")
    steps = factory_config(m).sample_steps if m.kind == "factory" else 0  # a missing field samples its default
    if steps > limits.sample_steps:
        raise WireError(f"factory {m.id[:12]} asks {steps} sampler steps (limit sample_steps {limits.sample_steps})")
    if m.size > tensor_bytes + MAX_HEADER_BYTES:
        raise WireError(f"{m.kind} {m.id[:12]} declares {m.size} bytes for {tensor_bytes} bytes of weights")


@functools.lru_cache(maxsize=256)
def _arch_cost(kind: str, arch_bytes: bytes) -> tuple[int, int]:
    """(parameters, bytes of the state dict) of the model an arch describes, counted from its config."""
    probe = Manifest(kind, "-", b"", "-", [0], ["-"], decode(arch_bytes), "0" * 64, 0, 0, 0)  # for LoadError's message
    if kind == "factory":
        cfg = factory_config(probe)
        if not 1 <= cfg.image_size <= MAX_IMAGE_SIDE or not 1 <= cfg.channels <= MAX_CHANNELS:
            raise LoadError(probe, f"its images exceed {MAX_IMAGE_SIDE} px or {MAX_CHANNELS} channels")
        if not 1 <= cfg.num_train_timesteps <= MAX_TIMESTEPS or cfg.sample_steps < 1:
            raise LoadError(
                probe, f"its {cfg.num_train_timesteps} timesteps or {cfg.sample_steps} steps are out of bounds"
            )
        # bounded before anything is built: building itself costs time per layer (a million layers: 35 min)
        widths, layers = cfg.block_out_channels, cfg.layers_per_block
        if not 1 <= len(widths) <= MAX_LEVELS or not all(1 <= w <= MAX_WIDTH for w in widths) or not 1 <= layers <= 8:
            raise LoadError(
                probe, f"{len(widths)} levels of widths {list(widths)[:8]} x {layers} layers is out of bounds"
            )
        return unet_size(cfg)
    else:
        ecfg, num_classes, shape = expert_spec(probe)
        if max(shape[:2]) > MAX_IMAGE_SIDE or shape[2] > MAX_CHANNELS or not 1 <= num_classes <= 4096:
            raise LoadError(probe, f"image_shape {list(shape)} or num_classes {num_classes} is out of bounds")
        if (
            not 0 < ecfg.width <= MAX_WIDTH
            or not 0 < len(ecfg.blocks) <= 8
            or any(not 0 <= b <= 16 for b in ecfg.blocks)
        ):
            raise LoadError(probe, f"width {ecfg.width} or blocks {list(ecfg.blocks)} is out of bounds")
    return expert_size(ecfg, num_classes, shape)
