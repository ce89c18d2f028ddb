"""From a verified manifest to what it describes: the one place a peer's `arch` and weights are parsed.

A manifest's `arch` and blob are the owner's word, signed but not checked by anyone else. Each loader
turns one kind of artifact into what this node runs, and anything wrong with it (an arch this version
does not understand, weights that do not fit it, a blob no longer held) becomes a LoadError naming the
artifact, so callers leave that one artifact out instead of failing.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as load_safetensors

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import ExpertConfig, expert_from_weights
from ffnode.factory.model import FactoryConfig


class LoadError(ValueError):
    """An artifact that cannot be turned into a working module; the message says which and why."""

    def __init__(self, m: Manifest, reason: str) -> None:
        super().__init__(f"{m.kind} {m.id[:12]} of {m.owner}: {reason}")
        self.artifact_id = m.id


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


def _weights(store: Store, m: Manifest) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(store.read_blob(m))  # safetensors: parsing a peer's file runs no code
    except KeyError as exc:
        raise LoadError(m, str(exc.args[0])) from None
    except Exception as exc:  # a signed but malformed file: the safetensors parser's own error types
        raise LoadError(m, f"its weights cannot be read ({exc})") from None
