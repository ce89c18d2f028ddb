"""From a verified manifest to what it describes: the one place a peer's `arch` and weights are parsed.

A manifest's `arch` and blob are the owner's word, signed but not checked by anyone else. Each loader
turns one kind of artifact into what this node runs, and anything wrong with it (an arch this version
does not understand, weights that do not fit it, a blob no longer held) becomes a LoadError naming the
artifact, so callers leave that one artifact out instead of failing.

`vet` runs before a manifest is even stored: it sizes the model the arch describes on torch's "meta"
device (no memory, ~40 ms, cached per arch) and refuses one whose parameters, sampler steps or declared
blob size exceed the node's limits, so a small signed manifest cannot make the node build a 37 GiB model
or fetch 4 GiB for one.
"""

from __future__ import annotations

import functools

import torch
from safetensors.torch import load_file

from ffnode.artifacts.blob import MAX_HEADER_BYTES
from ffnode.artifacts.codec import WireError, canonical_bytes, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import LimitsConfig
from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import build_expert, expert_from_weights
from ffnode.factory.config import FactoryConfig
from ffnode.factory.model import build_unet

MAX_IMAGE_SIDE = 512  # pixels: the largest image a factory or expert of this version may be made for
MAX_CHANNELS = 4
MAX_TIMESTEPS = 10_000  # a factory's num_train_timesteps
MAX_LEVELS = 6  # UNet levels (the profiles use 2 or 3)
MAX_WIDTH = 1024  # channels of one level or of an expert's first stage (the gpu profile: 128 and 64)


class LoadError(ValueError):
    """An artifact that cannot be turned into a working module; the message says which and why."""

    def __init__(self, m: Manifest, reason: str) -> None:
        super().__init__(f"{m.kind} {m.id[:12]} of {m.owner}: {reason}")
        self.artifact_id, self.reason = m.id, reason


def factory_config(m: Manifest) -> FactoryConfig:
    """The factory's config from its manifest (no weights read)."""
    try:
        return FactoryConfig.from_dict(m.arch)
    except (TypeError, ValueError) as exc:
        raise LoadError(m, f"its config is not understood ({exc})") from None


def load_factory(store: Store, m: Manifest) -> tuple[FactoryConfig, dict[str, torch.Tensor]]:
    """A factory's config and weights, ready for `sample_factory` (which checks that they fit each other)."""
    cfg = factory_config(m)
    return cfg, _weights(store, m)


def expert_spec(m: Manifest) -> tuple[ExpertConfig, int, tuple[int, int, int]]:
    """An expert's (config, number of classes, image shape (H, W, C)) from its manifest."""
    try:
        arch = m.arch
        cfg = ExpertConfig.from_dict(arch["expert"])
        num_classes, shape = arch["num_classes"], tuple(arch["image_shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(m, f"its arch is not understood ({exc!r})") from None
    if type(num_classes) is not int or len(shape) != 3 or not all(type(x) is int and x > 0 for x in shape):
        raise LoadError(m, f"num_classes {num_classes!r} and image_shape {list(shape)!r} are not sizes")
    return cfg, num_classes, shape  # type: ignore[return-value]


def load_expert(store: Store, m: Manifest) -> torch.nn.Module:
    """The expert as an eval-mode module (strict load: weights that do not fit the arch are refused)."""
    cfg, num_classes, shape = expert_spec(m)
    weights = _weights(store, m)
    try:
        return expert_from_weights(weights, cfg, num_classes, shape)
    except (RuntimeError, ValueError) as exc:
        raise LoadError(m, f"its weights do not fit its arch ({str(exc)[:200]})") from None


def vet(m: Manifest, limits: LimitsConfig) -> None:
    """WireError if the artifact's arch is not understood or costs more than `limits` allow."""
    try:
        params, tensor_bytes = _arch_cost(m.kind, canonical_bytes(m.arch))
    except LoadError as exc:
        raise WireError(f"{m.kind} {m.id[:12]}: {exc.reason}") from None
    cap = limits.factory_params if m.kind == "factory" else limits.expert_params
    if params > cap:
        raise WireError(f"{m.kind} {m.id[:12]} has {params:,} parameters: over this node's limit of {cap:,}")
    steps = m.arch.get("sample_steps", 0)
    if m.kind == "factory" and steps > limits.sample_steps:
        raise WireError(f"factory {m.id[:12]} asks {steps} sampler steps (limit sample_steps {limits.sample_steps})")
    if m.size > tensor_bytes + MAX_HEADER_BYTES:
        raise WireError(f"{m.kind} {m.id[:12]} declares {m.size} bytes for {tensor_bytes} bytes of weights")


@functools.lru_cache(maxsize=256)
def _arch_cost(kind: str, arch_bytes: bytes) -> tuple[int, int]:
    """(parameters, bytes of the state dict) of the model an arch describes, measured on the meta device."""
    probe = Manifest(kind, "-", b"", "-", [0], ["-"], decode(arch_bytes), "0" * 64, 0, 0, 0)  # for the loaders' errors
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
        build = functools.partial(build_unet, cfg)
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
        build = functools.partial(build_expert, ecfg, num_classes, shape)
    try:
        with torch.device("meta"):
            model = build()
    except Exception as exc:  # a config the model constructors refuse
        raise LoadError(probe, f"its arch builds no model ({str(exc)[:200]})") from None
    params = sum(p.numel() for p in model.parameters())
    return params, sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _weights(store: Store, m: Manifest) -> dict[str, torch.Tensor]:
    try:
        path = store.blob_file(m)
    except KeyError as exc:
        raise LoadError(m, str(exc.args[0])) from None
    try:
        return load_file(path)  # safetensors maps the file (never read whole into memory) and runs no code
    except Exception as exc:  # a signed but malformed file: the safetensors parser's own error types
        raise LoadError(m, f"its weights cannot be read ({exc})") from None
