"""From a verified manifest and its blob to the module it describes: the one place a peer's weights are read.

The arch was vetted when the manifest was stored (ffnode/arch.py); here the weights must also fit it. Anything
wrong (weights that do not fit, a blob no longer held, a file safetensors cannot parse) becomes a LoadError naming
the artifact, so callers leave that one artifact out instead of failing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ffnode.arch import LoadError, Named, expert_spec, factory_config, held_blob
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import expert_from_weights
from ffnode.factory.config import FactoryConfig


def load_factory(store: Store, m: Manifest) -> tuple[FactoryConfig, dict[str, torch.Tensor]]:
    """A factory's config and weights, ready for `sample_factory` (which checks that they fit each other)."""
    return load_factory_file(m, held_blob(store, m))


def load_factory_file(m: Named, path: Path) -> tuple[FactoryConfig, dict[str, torch.Tensor]]:
    """The same from the blob's path: what a job reads (it holds no store)."""
    return factory_config(m), _read(m, path)


def load_expert(store: Store, m: Manifest) -> torch.nn.Module:
    """The expert as an eval-mode module (strict load: weights that do not fit the arch are refused)."""
    return load_expert_file(m, held_blob(store, m))


def load_expert_file(m: Manifest, path: Path) -> torch.nn.Module:
    """The same from the blob's path: what the query worker reads (it holds no store)."""
    cfg, num_classes, shape = expert_spec(m)
    weights = _read(m, path)
    try:
        return expert_from_weights(weights, cfg, num_classes, shape)
    except (RuntimeError, ValueError) as exc:
        raise LoadError(m, f"its weights do not fit its arch ({str(exc)[:200]})") from None


def _read(m: Named, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)  # safetensors maps the file (never read whole into memory) and runs no code
    except Exception as exc:  # a signed but malformed file: the safetensors parser's own error types
        raise LoadError(m, f"its weights cannot be read ({exc})") from None
