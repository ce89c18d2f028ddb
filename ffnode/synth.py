"""Build a site's class-balanced synthetic set from its peers' factories."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ffnode.factory.config import FactoryConfig
from ffnode.factory.sample import sample_factory


class SampleError(RuntimeError):
    """One factory could not be sampled: `index` is its position among the factories of class `label`."""

    def __init__(self, label: int, index: int, cause: Exception) -> None:
        super().__init__(f"factory {index} of class {label} cannot be sampled: {cause}")
        self.label, self.index = label, index


class _Ticks:
    """The per-step callback for sample_factory: reports progress, and remembers whether it raised (a stop)."""

    def __init__(self, progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
        self.progress, self.done, self.total, self.raised = progress, done, total, False

    def __call__(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.done, self.total)
            except BaseException:
                self.raised = True
                raise


def _child_seed(seed: int, label: int, index: int) -> int:
    """An independent seed per (class, factory), so adding a factory does not change the others' samples."""
    return int(np.random.SeedSequence([seed, label, index]).generate_state(1)[0])


def synthesize(
    factories: Sequence[tuple[int, dict[str, torch.Tensor], FactoryConfig]],
    per_class: int,
    *,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    on_factory: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample `per_class` images for every class that has at least one factory.

    `factories` holds (label, weights, config). When several sites publish a factory for the same class,
    the class's count is split between them as evenly as possible (earlier factories get the remainder),
    so every class ends up with exactly `per_class` images however many sites hold it.
    Returns images (N, H, W, C) uint8 and labels (N,) int64, grouped by class in ascending label order.
    `on_factory(label, index)` is told which factory is sampled next (a job names it if it is killed meanwhile).
    """
    by_class: dict[int, list[tuple[dict[str, torch.Tensor], FactoryConfig]]] = {}
    for label, weights, cfg in factories:
        by_class.setdefault(int(label), []).append((weights, cfg))
    if not by_class:
        raise ValueError("no factories to sample from")
    total = per_class * len(by_class)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done = 0
    for label in sorted(by_class):
        group = by_class[label]
        counts = [len(chunk) for chunk in np.array_split(np.arange(per_class), len(group))]
        for index, ((weights, cfg), count) in enumerate(zip(group, counts, strict=True)):
            if count == 0:
                continue
            ticks = _Ticks(progress, done, total)
            if on_factory is not None:
                on_factory(label, index)
            try:
                images.append(sample_factory(weights, cfg, count, seed=_child_seed(seed, label, index), on_step=ticks))
            except Exception as exc:
                if ticks.raised:  # the progress callback stopped it (shutdown): not the factory's fault
                    raise
                raise SampleError(label, index, exc) from exc  # e.g. weights that do not fit their config
            labels.append(np.full(count, label, dtype=np.int64))
            done += count
            if progress is not None:
                progress(done, total)
    return np.concatenate(images), np.concatenate(labels)
