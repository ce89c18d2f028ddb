"""Factories: config round trip, deterministic training, crash-safe resume, sampling, synthesis, profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

from ffnode.factory.config import SAMPLERS, FactoryConfig
from ffnode.factory.model import build_sample_scheduler, build_unet
from ffnode.factory.sample import sample_factory
from ffnode.factory.train import CHECKPOINT_NAME, train_factory
from ffnode.profiles import PROFILES, profile_for
from ffnode.synth import synthesize

CFG = PROFILES["tiny"].factory  # 8x8x1, a few steps


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(images: np.ndarray) -> tuple[dict[str, torch.Tensor], dict]:
    return train_factory(images, CFG, seed=3)


def test_config_round_trip_is_plain_data() -> None:
    cfg = PROFILES["gpu"].factory
    d = cfg.to_dict()
    assert all(isinstance(v, int | float | str | bool | list) for v in d.values())
    assert FactoryConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown FactoryConfig fields"):
        FactoryConfig.from_dict(d | {"colour": 1})
    for field in ("sampler", "prediction_type", "beta_schedule"):  # enum-like fields are checked when made
        with pytest.raises(ValueError, match=f"unknown {field} 'bogus'"):
            FactoryConfig.from_dict(d | {field: "bogus"})
    with pytest.raises(ValueError, match="does not halve cleanly"):
        FactoryConfig(image_size=10, block_out_channels=(8, 8, 8))


def test_train_summary_and_weights(trained: tuple[dict, dict], images: np.ndarray) -> None:
    weights, summary = trained
    assert weights.keys() == build_unet(CFG).state_dict().keys()
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert summary["n_train"] == len(images) and summary["steps"] == CFG.train_steps
    assert summary["images_seen"] == CFG.train_steps * CFG.batch_size and np.isfinite(summary["final_loss"])


def test_training_is_deterministic_given_seed(trained: tuple[dict, dict], images: np.ndarray) -> None:
    again, _ = train_factory(images, CFG, seed=3)
    other, _ = train_factory(images, CFG, seed=4)
    assert all(torch.equal(trained[0][k], again[k]) for k in again)
    assert not all(torch.equal(trained[0][k], other[k]) for k in other)


def test_resume_after_crash_equals_uninterrupted(
    tmp_path: Path, trained: tuple[dict, dict], images: np.ndarray
) -> None:
    class Crash(Exception):
        pass

    def crash_after_checkpoint(step: int, total: int) -> None:
        if step == CFG.checkpoint_every + 1:
            raise Crash

    with pytest.raises(Crash):
        train_factory(images, CFG, seed=3, checkpoint_dir=tmp_path, progress=crash_after_checkpoint)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    seen: list[int] = []
    resumed, summary = train_factory(
        images, CFG, seed=3, checkpoint_dir=tmp_path, progress=lambda step, total: seen.append(step)
    )
    assert seen[0] == CFG.checkpoint_every + 1  # restarted after the saved step, not from zero
    assert all(torch.equal(trained[0][k], resumed[k]) for k in resumed)
    assert summary["final_loss"] == trained[1]["final_loss"]


@pytest.mark.parametrize("damage", ["data", "header", "truncated", "other-run"])
def test_a_damaged_checkpoint_is_discarded_never_resumed(
    damage: str, tmp_path: Path, trained: tuple[dict, dict], images: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped data byte once resumed silently into a different factory, and a flipped header byte failed every
    round: now either starts over and gives the uninterrupted factory, bit for bit."""

    def crash(step: int, total: int) -> None:
        if step == CFG.checkpoint_every + 1:
            raise KeyboardInterrupt

    seed = 5 if damage == "other-run" else 3
    with pytest.raises(KeyboardInterrupt):
        train_factory(images, CFG, seed=seed, checkpoint_dir=tmp_path, progress=crash)
    path = tmp_path / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    if damage == "data":
        data[-100] ^= 0x01
    elif damage == "header":
        data[20] ^= 0x01
    elif damage == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    seen: list[int] = []
    again, _ = train_factory(images, CFG, seed=3, checkpoint_dir=tmp_path, progress=lambda s, t: seen.append(s))
    assert seen[0] == 1  # started over
    assert all(torch.equal(trained[0][k], again[k]) for k in again)
    assert "discarding factory checkpoint" in caplog.text


def test_sample_round_trip_through_bytes(trained: tuple[dict, dict]) -> None:
    weights = load_weights(save_weights(trained[0]))  # what a peer gets over the wire
    a = sample_factory(trained[0], CFG, 10, seed=7, batch_size=4)
    b = sample_factory(weights, CFG, 10, seed=7, batch_size=4)
    c = sample_factory(weights, CFG, 10, seed=8, batch_size=4)
    assert a.shape == (10, 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if not s.startswith("edm")])
def test_every_sampler_is_deterministic(trained: tuple[dict, dict], sampler: str) -> None:
    cfg = dataclasses.replace(CFG, sampler=sampler)
    a = sample_factory(trained[0], cfg, 6, seed=1, batch_size=4)
    assert a.shape == (6, 8, 8, 1) and np.array_equal(a, sample_factory(trained[0], cfg, 6, seed=1, batch_size=4))
    assert a.std() > 0  # the solver ran to images, not a constant
    solver = type(build_sample_scheduler(cfg)).__name__
    assert solver == {"unipc": "UniPCMultistepScheduler", "dpmsolver++": "DPMSolverMultistepScheduler"}.get(
        sampler, "DDIMScheduler"
    )
    other = dataclasses.replace(cfg, sampler=next(s for s in ("unipc", "ddim") if s != sampler))
    assert not np.array_equal(a, sample_factory(trained[0], other, 6, seed=1, batch_size=4))  # another solver


EDM = dataclasses.replace(CFG, prediction_type="edm", sampler="edm-dpmsolver++")


def test_edm_targets_are_what_diffusers_edm_sampler_denoises_with() -> None:
    """Training regresses F with c_skip x + c_out F = x0, at the c_in and c_noise the sampler feeds the UNet: a
    factory trained this way is sampled by diffusers' EDM solver, so any mismatch (a sign, a scale) breaks it."""
    from ffnode.factory.objective import Objective

    objective, solver = Objective(EDM), build_sample_scheduler(EDM)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1, torch.randn(5, 1, 8, 8, generator=g)
    sigma = objective.draw(5, g)
    x_in, c_noise, target = objective.inputs(x0, noise, sigma)
    s4 = sigma[:, None, None, None]
    x = x0 + s4 * noise
    assert torch.allclose(solver.precondition_outputs(x, target, s4), x0, atol=1e-5)
    assert torch.allclose(solver.precondition_inputs(x, s4), x_in) and torch.allclose(
        solver.precondition_noise(sigma), c_noise
    )
    levels = objective.at((0.05, 0.5, 0.95))  # the audit's fixed levels: quantiles of the training sigmas
    assert levels[0] < np.exp(EDM.p_mean) < levels[2] and abs(float(levels[1]) - np.exp(EDM.p_mean)) < 1e-4
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(CFG, prediction_type="edm")
    for bad in ({"sigma_max": float("inf")}, {"sigma_min": float("nan")}, {"sigma_max": 1e30}, {"rho": -1.0}):
        with pytest.raises(ValueError, match="edm"):  # what a peer's arch could say: refused before any sampling
            dataclasses.replace(EDM, **bad)


def test_an_edm_factory_learns_its_class() -> None:
    """Trained on one image, an EDM factory's samples land near it (a wrong target would not), deterministically."""
    image = np.zeros((1, 8, 8, 1), np.uint8)
    image[0, 2:6, 2:6] = 255  # a white square on black
    cfg = dataclasses.replace(EDM, train_steps=300)  # ~2 s; the tiny profile's 4 steps learn nothing yet
    weights, summary = train_factory(np.repeat(image, 4, axis=0), cfg, seed=0)
    a = sample_factory(weights, EDM, 8, seed=1, batch_size=4)
    assert np.array_equal(a, sample_factory(weights, EDM, 8, seed=1, batch_size=4)) and np.isfinite(
        summary["final_loss"]
    )
    error = np.abs(a.astype(float) - image).mean()
    untrained = sample_factory(build_unet(EDM).state_dict(), EDM, 8, seed=1, batch_size=4)
    assert error < 25 and error < 0.5 * np.abs(untrained.astype(float) - image).mean(), error


def test_synthesize_is_class_balanced(trained: tuple[dict, dict]) -> None:
    w = trained[0]
    calls: list[tuple[int, int]] = []
    x, y = synthesize([(4, w, CFG), (1, w, CFG), (4, w, CFG)], 5, seed=0, progress=lambda d, t: calls.append((d, t)))
    assert x.shape == (10, 8, 8, 1) and y.tolist() == [1] * 5 + [4] * 5
    # images done after each factory (class 4's five come from two: 3 + 2), and again at every solver step
    assert calls[-1] == (10, 10) and sorted({d for d, _ in calls}) == [0, 5, 8, 10]
    assert len(calls) == 3 + 3 * CFG.sample_steps

    def stop(done: int, total: int) -> None:
        raise InterruptedError  # what a shutdown tick raises: sampling ends within one solver step

    with pytest.raises(InterruptedError):
        synthesize([(4, w, CFG)], 5, seed=0, progress=stop)
    x2, _ = synthesize([(4, w, CFG), (1, w, CFG), (4, w, CFG)], 5, seed=0)
    assert np.array_equal(x, x2)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 3), (32, 32, 3)])
def test_profiles_adapt_to_image_shape(shape: tuple[int, int, int]) -> None:
    for name in PROFILES:
        if shape[0] % 2 ** (len(PROFILES[name].factory.block_out_channels) - 1):
            continue
        p = profile_for(name, shape)
        assert (p.factory.image_size, p.factory.image_size, p.factory.channels) == shape
        assert dataclasses.replace(p.expert, max_images=0) == PROFILES[name].expert
    with pytest.raises(ValueError, match="use one of tiny, default, cpu, gpu"):
        profile_for("huge", shape)


def test_a_peers_config_is_typed_and_sized_before_anything_is_built() -> None:
    import time

    from ffnode.arch import vet
    from ffnode.artifacts.codec import WireError
    from ffnode.artifacts.manifest import Manifest
    from ffnode.config import LimitsConfig

    def manifest(arch: dict) -> Manifest:
        return Manifest("factory", "o", b"", "f", [0], ["a"], arch, "0" * 64, 10, 1, 1)

    base = CFG.to_dict()
    for bad in ({"image_size": 8.0}, {"sample_steps": 2.5}, {"layers_per_block": 10**6}, {"hflip": 1}):
        t0 = time.perf_counter()
        with pytest.raises(WireError):
            vet(manifest(base | bad), LimitsConfig())
        assert time.perf_counter() - t0 < 2.0, bad  # refused before a million layers are built
    vet(manifest(base), LimitsConfig())
