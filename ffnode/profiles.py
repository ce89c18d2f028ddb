"""Named bundles of factory, expert and synthesis settings, sized for the hardware they run on.

Every setting here was chosen by measurement (scripts/bench_learning.py); the comments give the figures.
A profile is measured at one image shape (`sized_for`) and fitted to the federation's images by `profile_for`,
which sets the factory's image_size and channels and turns the profile's stated expert budget into a cap on the
images the expert sees (`ExpertConfig.max_images`): a convolution costs about its pixel count, so the budget,
stated in images of `sized_for`, buys proportionally fewer images of a bigger shape. Epochs then shrink to fit a
site that holds more data than the profile was sized for, down to one epoch; `fit_warning` says when a profile
meets images far from its shape and names the profile sized for them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ffnode.expert.resnet import ExpertConfig
from ffnode.factory.model import FactoryConfig


@dataclass(frozen=True)
class Profile:
    factory: FactoryConfig
    expert: ExpertConfig
    synth_per_class: int  # synthetic images per missing class: sampling is cheap beside training, so be generous
    description: str
    sized_for: tuple[int, int, int]  # (H, W, C): the image shape the comments' figures were measured at
    # the expert stage's budget: images of `sized_for` it may see in all (epochs x training set), chosen so the
    # runs it was sized for never reach it (their figures stay as measured) and a site with 10x the data does
    expert_images: int


PROFILES: dict[str, Profile] = {
    # unit tests: every stage in well under a second, results meaningless
    "tiny": Profile(
        factory=FactoryConfig(
            block_out_channels=(16, 16),
            norm_num_groups=4,
            train_steps=4,
            batch_size=8,
            warmup_steps=1,
            checkpoint_every=2,
            sample_steps=3,
        ),
        expert=ExpertConfig(width=8, blocks=(1,), epochs=2, batch_size=32),
        synth_per_class=8,
        description="unit tests only: seconds per node, accuracy meaningless",
        sized_for=(8, 8, 1),
        expert_images=1_000_000,
    ),
    # the digits testnet: 10 single-class nodes as 10 processes on 2 cores, one thread each. Measured on one
    # core: 150 steps x 64 = 9,600 images seen (~14 s), DPM-Solver++ 10 steps. Synthetic images per missing class
    # (scripts/bench_learning.py --per-class N, seeds 0 / 1): 100 -> PoE 0.981 / 0.978, 200 -> 0.986 / 0.986 for
    # +2 s of sampling per node, 300 -> 0.986 (seed 1), 400 -> 0.989 (seed 0) for +7 s; 300 factory steps instead
    # of 150 bought 0.986 at 2x the cost
    "default": Profile(
        factory=FactoryConfig(train_steps=150, batch_size=64, checkpoint_every=50, sample_steps=10),
        expert=ExpertConfig(width=16, blocks=(1, 1), epochs=8, batch_size=32),
        synth_per_class=200,
        description="8x8 digits on one CPU core per node: ~20 s of CPU per node",
        sized_for=(8, 8, 1),
        expert_images=20_000,  # a digits site sees ~15,500 (1,940 images x 8 epochs), centralised ~11,500
    ),
    # 28x28 medical images (BloodMNIST, RetinaMNIST) on a 2-core CPU, sized so 8 sites finish in well under an
    # hour. Measured at 28x28x3 on 2 threads: factory training ~150 img/s in bf16 eager (torch.compile: 128 img/s
    # after 117 s of compiling; channels_last: 118), so 400 x 64 images took ~3 min of the machine per factory;
    # sampling ~40 img/s at 10 DPM-Solver++ steps (compiled: 58 after 52 s of compiling, not worth it per
    # process), and UniPC at 8 steps solves closer to the exact ODE than that for 0.8x the model calls (see
    # FactoryConfig.sampler; on the same RetinaMNIST factories, product-rule PoE 0.455 with UniPC-8 against 0.465
    # with DPM-Solver++-10, AUROC 0.710 against 0.702, prior-rule PoE 0.503 against 0.500: a wash in accuracy);
    # expert width 16 in bf16 1,380 img/s (width 32 in fp32: 316). 640 steps (40,960 images seen, ~3.5 min of the
    # machine per factory) against 400: BloodMNIST PoE 0.877 vs 0.869-0.872 in 39 min, server mode 0.830 vs
    # 0.788-0.813; RetinaMNIST seeds 0/1/2 0.523/0.545/0.525 vs 0.468/0.520/0.507, in 17 min; a wider (64, 96)
    # UNet at equal seconds lost (docs/benchmarks.md)
    "cpu": Profile(
        factory=FactoryConfig(
            train_steps=640,
            batch_size=64,
            hflip=True,
            checkpoint_every=100,
            sampler="unipc",
            sample_steps=8,
        ),
        expert=ExpertConfig(width=16, blocks=(1, 1, 1), epochs=15, batch_size=64, hflip=True, bf16=True),
        synth_per_class=500,
        description="28x28 medical images on a 2-core CPU: ~3.5 min of the machine per factory",
        sized_for=(28, 28, 3),
        expert_images=200_000,  # ~2.5 min at 1,380 img/s; a BloodMNIST silo site sees ~75,000, centralised ~180,000
    ),
    # one GPU, 32x32 RGB: wider models, attention, longer runs, many samples
    "gpu": Profile(
        factory=FactoryConfig(
            block_out_channels=(64, 128, 128),
            layers_per_block=2,
            norm_num_groups=32,
            attention=True,
            dropout=0.1,
            train_steps=20000,
            batch_size=256,
            lr=5e-4,
            warmup_steps=500,
            ema_decay=0.9995,
            hflip=True,
            checkpoint_every=1000,
            sample_steps=25,
        ),
        expert=ExpertConfig(width=64, blocks=(2, 2, 2), epochs=60, batch_size=256, lr=0.1, hflip=True, bf16=True),
        synth_per_class=5000,
        description="one GPU: about 5M images seen per factory",
        sized_for=(32, 32, 3),
        expert_images=4_000_000,  # a CIFAR-10 silo site: 50,000 images x 60 epochs = 3M
    ),
}


def pixels(shape: tuple[int, ...]) -> int:
    return math.prod(int(d) for d in shape)


def profile_for(name: str, image_shape: tuple[int, int, int]) -> Profile:
    """The named profile fitted to square images of `image_shape` (H, W, C): factory shape, expert budget."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}': use one of {', '.join(PROFILES)}")
    h, w, c = image_shape
    if h != w:
        raise ValueError(f"factories need square images, got {h}x{w}: crop or pad the dataset first")
    profile = PROFILES[name]
    factory = dataclasses.replace(profile.factory, image_size=int(h), channels=int(c))
    max_images = max(1, profile.expert_images * pixels(profile.sized_for) // pixels(image_shape))
    expert = dataclasses.replace(profile.expert, max_images=max_images)
    return dataclasses.replace(profile, factory=factory, expert=expert)


def fit_warning(name: str, image_shape: tuple[int, int, int]) -> str | None:
    """What to tell an operator whose images are over 4x the pixels of the profile's shape, or under a quarter."""
    ratio = pixels(image_shape) / pixels(PROFILES[name].sized_for)
    if 0.25 <= ratio <= 4:
        return None
    fits = min(
        (n for n in PROFILES if n != "tiny"),  # tiny is for unit tests, never advice
        key=lambda n: abs(math.log(pixels(image_shape) / pixels(PROFILES[n].sized_for))),
    )
    shape, sized = "x".join(map(str, image_shape)), "x".join(map(str, PROFILES[name].sized_for))
    if ratio > 1:
        cost = (
            f"{ratio:.1f}x the pixels: each factory step costs ~{ratio:.1f}x as much and the expert may see "
            f"{profile_for(name, image_shape).expert.max_images:,} images in all (at least one epoch)"
        )
    else:
        cost = f"1/{1 / ratio:.0f} of the pixels: its models are bigger and slower than these images need"
    better = f"profile {fits!r} is sized for {'x'.join(map(str, PROFILES[fits].sized_for))}" if fits != name else ""
    return f"profile {name!r} was sized for {sized} images and these are {shape}, {cost}" + (
        f"; {better}" if better else ""
    )
