"""Profiles fit the data: `auto` picks the one sized for the images and the sites' data, a named one that does not
fit is refused (or kept with its cost stated when forced), and no budget cuts an expert below what its profile was
validated with."""

from __future__ import annotations

import pytest

from ffnode.profiles import PROFILES, ProfileError, choose_profile, expert_epochs, fit_warning, fits, profile_for

SHAPES = [(8, 8, 1), (8, 8, 3), (16, 16, 1), (28, 28, 1), (28, 28, 3), (32, 32, 3), (56, 56, 1)]


def test_no_image_shape_cuts_the_budget_below_the_validated_one() -> None:
    for name, profile in PROFILES.items():
        for shape in SHAPES:
            if shape[0] % 2 ** (len(profile.factory.block_out_channels) - 1):
                continue
            assert profile_for(name, shape).expert.max_images >= profile.expert_images, (name, shape)
    # the case: `default` (sized 8x8) on 28x28 grayscale. Scaling the budget by pixels left 1,632 images:
    # one epoch for a digits-sized site and for a site of 5,400 real images (PoE 0.241 instead of ~0.7)
    assert profile_for("default", (28, 28, 1)).expert.max_images == 30_000
    # a digits-sized site (what the profile was validated with) keeps all its epochs at any shape it fits
    assert expert_epochs("default", (28, 28, 1), 144, 9) == PROFILES["default"].expert.epochs == 8
    assert expert_epochs("default", (28, 28, 1), 5_400, 9) == 3  # more data than validated: fewer epochs only
    # smaller images buy more: the cpu budget on 8x8x3 images is scaled up
    assert profile_for("cpu", (8, 8, 3)).expert.max_images == 200_000 * (28 * 28 * 3) // (8 * 8 * 3)
    # the runs each profile was sized for stay under it, figures as measured
    assert expert_epochs("default", (8, 8, 1), 144, 9) == 8
    assert expert_epochs("cpu", (28, 28, 3), 1_600, 7) == 15  # a BloodMNIST silo site
    # a near-IID site's small set trains more epochs, up to the floor (and never past the cap): a digits
    # Dirichlet(0.3) site of 95 images missing no class trained 24 steps, and its expert answered 0.28 alone
    assert expert_epochs("cpu", (28, 28, 3), 300, 2) == 47  # 60,000 images seen at least: 47 x 1,300
    assert expert_epochs("default", (8, 8, 1), 236, 0) == 127  # where floor and cap are both 30,000, the cap
    assert expert_epochs("default", (8, 8, 1), 10, 0) == 938  # under a batch: one step an epoch, 30,000 / 32 steps
    assert expert_epochs("tiny", (8, 8, 1), 5, 0) == PROFILES["tiny"].expert.epochs  # no floor


@pytest.mark.parametrize(
    ("shape", "sites", "gpu", "chosen"),
    [
        ((8, 8, 1), [(144, 9)], False, "default"),  # digits
        ((8, 8, 1), [(144, 9)], True, "default"),
        ((28, 28, 3), [(1_600, 7)], False, "cpu"),  # BloodMNIST
        ((28, 28, 1), [(5_400, 9)], False, "cpu"),  # the unseen 28x28x1 dataset
        ((32, 32, 3), [(5_000, 9)], False, "cpu"),  # CIFAR-10 on a CPU: gpu is never picked without CUDA
        ((32, 32, 3), [(5_000, 9)], True, "gpu"),
        ((28, 28, 3), [(1_600, 7)], True, "cpu"),  # the data count decides between two that fit the shape:
        ((28, 28, 3), [(1_600, 7), (40_000, 0)], True, "gpu"),  # a site cpu's budget would cut, gpu's does not
        ((64, 64, 1), [(100, 1)], False, "cpu"),
    ],
)
def test_auto_picks_the_profile_sized_for_the_data(shape, sites, gpu: bool, chosen: str) -> None:
    name, said = choose_profile("auto", shape, sites, gpu=gpu)
    assert name == chosen and f"profile {chosen!r} chosen for {'x'.join(map(str, shape))}" in said
    assert fits(name, shape)


def test_auto_never_picks_tiny_and_refuses_what_nothing_fits() -> None:
    for shape in SHAPES:
        assert choose_profile("auto", shape, gpu=True)[0] != "tiny"
    with pytest.raises(ProfileError, match=r"no profile fits 100x100x3 images: pass --resize 28x28 for 'cpu'"):
        choose_profile("auto", (100, 100, 3), gpu=False)
    with pytest.raises(ProfileError, match="--resize 32x32 for 'gpu'"):
        choose_profile("auto", (100, 100, 3), gpu=True)


def test_a_named_profile_that_does_not_fit_is_refused_unless_forced() -> None:
    assert choose_profile("tiny", (8, 8, 1), [(40, 1)]) == ("tiny", "")
    with pytest.raises(ProfileError, match=r"'tiny' was sized for 8x8x1 .* 64x64x1 \(64.0x the pixels\).*'cpu' fits"):
        choose_profile("tiny", (64, 64, 1), [(40, 1)], gpu=False)
    with pytest.raises(ProfileError, match="'default' .*28x28x1.*pass --profile cpu.*--force-profile"):
        choose_profile("default", (28, 28, 1), [(5_400, 9)], gpu=False)
    name, said = choose_profile("default", (28, 28, 1), [(5_400, 9)], force=True, gpu=False)
    assert name == "default" and "12.2x the pixels" in said and "kept (--force-profile)" in said
    assert "trains its expert 3 of 8 epochs (27,000 images seen, budget 30,000" in said
    with pytest.raises(ProfileError, match="unknown profile 'huge': use one of auto, tiny"):
        choose_profile("huge", (8, 8, 1))


def test_fit_warning_names_the_cost_and_the_profile_sized_for_the_images() -> None:
    warning = fit_warning("default", (28, 28, 1))
    assert warning is not None and "12.2x the pixels" in warning and "profile 'cpu'" in warning
    assert fit_warning("default", (8, 8, 1)) is None and fit_warning("cpu", (28, 28, 1)) is None
    assert "profile 'default'" in (fit_warning("cpu", (8, 8, 1)) or "")
