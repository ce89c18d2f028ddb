"""Named bundles of factory, expert and synthesis settings, sized for the hardware they run on.

Every setting here was chosen by measurement (scripts/bench_learning.py); the comments give the figures.
A profile is measured at one image shape (`sized_for`) and fits images of a quarter to 4x its pixels
(`fits`); `profile_for` fits it to the federation's images: it sets the factory's image_size and channels and
turns the profile's stated expert budget into a cap on the images the expert sees (`ExpertConfig.max_images`).
The cap is never below the budget as stated (`expert_images`, the images the profile was validated with at
its own shape): no image shape cuts an expert below what the profile was measured to reach; smaller images
buy proportionally more. Only a site holding more data than the profile was sized for trains fewer epochs
(never under one); a site with little trains more, so that it sees at least about `expert_min_images`
(`epochs_over`).
`choose_profile` is the one rule that picks a profile (`ffnode init`, scripts/testnet.py): `auto` is the profile
sized for the data (among those that fit its shape, first one whose budget covers every site's full epochs, then
the nearest in pixels; never `tiny`, `gpu` only where CUDA is present); a named profile that does not fit is
refused naming the one that does, unless forced, and then its cost is stated (`fit_warning`, which `ffnode start`
logs too).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ffnode.config import Config, ConfigError
from ffnode.expert.config import ExpertConfig
from ffnode.factory.config import FactoryConfig


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
    # ... and the images it sees at least: a site whose expert set is small (near-IID partitions: its own images of
    # most classes, few synthesised) trains more epochs, so its expert gets about a silo site's steps. Without it a
    # digits Dirichlet(0.3) site of 95 images trained 24 steps and the federation answered 0.806; with 30,000 it
    # trained 945, and the rerun federation answered 0.967 (product rule 0.972)
    expert_min_images: int = 0
    # what a site spends, as measured at `sized_for` on the development CPU (one thread per job, bf16 where the
    # config says): images per core-second of factory training and of expert training. The budget a site
    # plans with is images seen over these (`budget`); None where it was never measured (no GPU was lent)
    factory_img_per_core_s: float | None = None
    expert_img_per_core_s: float | None = None
    needs_gpu: bool = False  # `auto` picks it only where CUDA is present

    def budget(self) -> dict[str, float | int | None]:
        """The most one factory and one expert cost a site: images seen, and core-seconds where measured (a site
        spends between expert_min_images and the cap on its expert; under `default` both are 30,000)."""
        factory_images = self.factory.train_steps * self.factory.batch_size
        expert_images = self.expert.max_images or self.expert_images
        # the rates were measured at `sized_for`: an image of k times the pixels costs about k times as much
        f = self.factory
        ratio = pixels((f.image_size, f.image_size, f.channels)) / pixels(self.sized_for)

        def core_s(images: int, rate: float | None) -> float | None:
            return round(images * ratio / rate, 1) if rate else None

        return {
            "factory_images": factory_images,
            "factory_core_s": core_s(factory_images, self.factory_img_per_core_s),
            "expert_images": expert_images,
            "expert_core_s": core_s(expert_images, self.expert_img_per_core_s),
        }


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
    # of 150 bought 0.986 at 2x the cost. The testnet with audits (126 training images a class), 2026-12-07, on the
    # same cached factories: 200 -> 0.983 twice; 400 -> 0.986, 0.986, 0.981 with the expert cut to 5 epochs by the
    # old 20,000 budget, 0.986, 0.983 at 8 (runs/cache-*.json): mean 0.984, so 400, and a budget for 8 epochs
    "default": Profile(
        factory=FactoryConfig(train_steps=150, batch_size=64, checkpoint_every=50, sample_steps=10),
        expert=ExpertConfig(width=16, blocks=(1, 1), epochs=8, batch_size=32),
        synth_per_class=400,
        description="8x8 digits on one CPU core per node: ~25 s of CPU per node",
        sized_for=(8, 8, 1),
        expert_images=30_000,  # a digits site sees ~30,000 (3,746 images x 8 epochs), centralised ~28,700 (20)
        expert_min_images=30_000,  # and so does every site, whatever its partition (~940 steps of 32)
        # README run (runs/digits.json, 200 synthetic a class): 9,600 images in 10.5 core-s a factory; 15,500 in 2.0
        # an expert
        factory_img_per_core_s=910.0,
        expert_img_per_core_s=7700.0,
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
        expert_min_images=60_000,  # 4,000 images x 15 epochs: a BloodMNIST silo site (~5,000 images) keeps its 15
        # 8 BloodMNIST silos, one thread per job (runs/poe-clip-blood.json, 600 images a class): 9,600 images in
        # 62.8 core-s a factory, 61,500 (4,100 x 15 epochs) in 35.5 an expert (mean); so a 640-step factory costs
        # ~270 core-s, its audit ~13 and synthesis ~63 more
        factory_img_per_core_s=153.0,
        expert_img_per_core_s=1730.0,
    ),
    # one GPU, 32x32 RGB (28x28 fits): FederatedFactory's recipe at a site's scale. Its generators are EDM2 UNets
    # with EDM preconditioning (P_mean -0.8, P_std 1.6, sigma_data 0.5), x-flips, 25M images each and 10,000
    # synthetic images per class; here a 6.5M-parameter diffusers UNet with the same preconditioning and
    # augmentation, 5M images. Never measured on a GPU (none was lent): scripts/gpu_blood.py runs it cut to 8 min
    "gpu": Profile(
        factory=FactoryConfig(
            block_out_channels=(64, 128, 128),
            layers_per_block=2,
            norm_num_groups=32,
            attention=True,
            dropout=0.1,
            prediction_type="edm",  # the paper's; on the CPU it won on BloodMNIST, lost on RetinaMNIST (benchmarks.md)
            sampler="edm-dpmsolver++",
            train_steps=20000,
            batch_size=256,
            lr=5e-4,
            warmup_steps=500,
            ema_decay=0.9995,
            hflip=True,
            checkpoint_every=1000,
            sample_steps=18,
        ),
        expert=ExpertConfig(width=64, blocks=(2, 2, 2), epochs=60, batch_size=256, lr=0.1, hflip=True, bf16=True),
        synth_per_class=10_000,  # the paper's
        description="one GPU: FederatedFactory's recipe (EDM), 5M images seen per factory",
        sized_for=(32, 32, 3),
        expert_images=6_000_000,  # a CIFAR-10 silo site: 5,000 real + 9 x 10,000 synthetic images x 60 epochs = 5.7M
        needs_gpu=True,
    ),
}


AUTO = "auto"  # `--profile auto`: choose_profile picks the profile sized for the data
FIT_RATIO = 4.0  # a profile fits images of 1/FIT_RATIO to FIT_RATIO times the pixels it was sized for


class ProfileError(ValueError):
    """A profile that does not fit the data (or no profile that does); the message says what to pass instead."""


def pixels(shape: tuple[int, ...]) -> int:
    return math.prod(int(d) for d in shape)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def pixel_ratio(name: str, image_shape: tuple[int, int, int]) -> float:
    """The images' pixels over those of the shape the profile was sized for."""
    return pixels(image_shape) / pixels(PROFILES[name].sized_for)


def fits(name: str, image_shape: tuple[int, int, int]) -> bool:
    """Whether images of `image_shape` have a quarter to 4x the pixels the profile was sized for."""
    return 1 / FIT_RATIO <= pixel_ratio(name, image_shape) <= FIT_RATIO


def profile_for(name: str, image_shape: tuple[int, int, int]) -> Profile:
    """The named profile fitted to square images of `image_shape` (H, W, C): factory shape, expert budget.

    The expert's cap is the budget stated in images of `sized_for`, scaled by pixels only upwards: images with
    fewer pixels buy more, images with more never cut it below `expert_images`, which every run the profile was
    validated with stays under (a 28x28 site under `default` keeps 30,000 images, not the 1,632 that scaling by
    pixels gave: one epoch, PoE 0.241 instead of ~0.7)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}': use one of {', '.join(PROFILES)}")
    h, w, c = image_shape
    if h != w:
        raise ValueError(f"factories need square images, got {h}x{w}: crop or pad the dataset first")
    profile = PROFILES[name]
    factory = dataclasses.replace(profile.factory, image_size=int(h), channels=int(c))
    scaled = profile.expert_images * pixels(profile.sized_for) // pixels(image_shape)
    expert = dataclasses.replace(profile.expert, max_images=max(profile.expert_images, scaled))
    return dataclasses.replace(profile, factory=factory, expert=expert)


def epochs_over(profile: Profile, n: int) -> int:
    """Epochs an expert of `profile` trains over a set of `n` images: the config's, more where it would take fewer
    steps than expert_min_images / batch_size (a set smaller than a batch is one step an epoch), fewer where
    expert.max_images caps it (never under one)."""
    n, cfg = max(1, n), profile.expert
    epochs = max(cfg.epochs, -(-profile.expert_min_images // max(n, cfg.batch_size)))
    return max(1, min(epochs, cfg.max_images // n)) if cfg.max_images > 0 else epochs


def expert_for(profile: Profile, n: int) -> ExpertConfig:
    """The expert config a site trains on a set of `n` images: the profile's, at `epochs_over` epochs."""
    return dataclasses.replace(profile.expert, epochs=epochs_over(profile, n))


def expert_epochs(name: str, image_shape: tuple[int, int, int], real: int, missing: int, synth: int = 0) -> int:
    """Epochs the expert of a site holding `real` images and missing `missing` classes trains under the profile
    (`synth`: synthetic images per missing class, 0 for the profile's)."""
    profile = profile_for(name, image_shape)
    return epochs_over(profile, real + (synth or profile.synth_per_class) * missing)


def choose_profile(
    name: str,
    image_shape: tuple[int, int, int],
    sites: Sequence[tuple[int, int]] = ((0, 0),),
    *,
    force: bool = False,
    synth: int = 0,
    gpu: bool | None = None,
) -> tuple[str, str]:
    """The profile a federation of `image_shape` images runs, and what to tell its operator ("" if nothing).

    `name` is `auto` or a profile; `sites` lists each site's (real images, classes it lacks), whose expert sets
    decide whether a profile's budget covers them; `synth` overrides synthetic images per missing class; `gpu`
    (default: whether CUDA is present) admits `needs_gpu` profiles to `auto`. Raises ProfileError naming the
    profile that fits when `name` does not (unless `force`), or the sizes that would fit when none does."""
    if name != AUTO and name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}: use one of {AUTO}, {', '.join(PROFILES)}")
    shape = _shape(image_shape)

    def best_fit() -> tuple[list[str], str | None]:
        """The profiles this machine may run, and the one that fits best (None if none fits). Asks torch for
        CUDA only here: a named profile that fits (every test daemon's `ffnode init`) never imports it."""
        nonlocal gpu
        if gpu is None:
            from ffnode.device import pick_device

            gpu = pick_device().type == "cuda"
        candidates = [n for n, p in PROFILES.items() if n != "tiny" and (gpu or not p.needs_gpu)]
        fitting = [n for n in candidates if fits(n, image_shape)]

        def covers(n: str) -> bool:
            return all(expert_epochs(n, image_shape, r, m, synth) >= PROFILES[n].expert.epochs for r, m in sites)

        best = min(fitting, key=lambda n: (not covers(n), abs(math.log(pixel_ratio(n, image_shape)))), default=None)
        return candidates, best

    if name == AUTO:
        candidates, best = best_fit()
        if best is None:
            raise ProfileError(
                f"no profile fits {shape} images: {_sizes_that_fit(candidates, image_shape)}, "
                f"or name a profile with --force-profile"
            )
        chosen, said = (
            best,
            f"profile {best!r} chosen for {shape} images (sized for {_shape(PROFILES[best].sized_for)})",
        )
    elif fits(name, image_shape):
        chosen, said = name, ""
    elif force:
        chosen, said = name, f"{fit_warning(name, image_shape)}; kept (--force-profile)"
    else:
        candidates, best = best_fit()
        other = (
            f"profile {best!r} fits them: pass --profile {best} (or {AUTO})"
            if best
            else _sizes_that_fit(candidates, image_shape)
        )
        raise ProfileError(
            f"profile {name!r} was sized for {_shape(PROFILES[name].sized_for)} images and these are {shape} "
            f"({_ratio_text(pixel_ratio(name, image_shape))}): {other}, or --force-profile to keep {name!r}"
        )
    budget = profile_for(chosen, image_shape)
    synth_each = synth or budget.synth_per_class
    cut = [(r, m) for r, m in sites if expert_epochs(chosen, image_shape, r, m, synth) < budget.expert.epochs]
    if cut:
        r, m = max(cut)
        n = r + synth_each * m
        epochs = expert_epochs(chosen, image_shape, r, m, synth)
        more = (
            f"a site of {r:,} real images trains its expert {epochs} of {budget.expert.epochs} epochs "
            f"({epochs * n:,} images seen, budget {budget.expert.max_images:,}: more data than profile {chosen!r} "
            f"was validated with)"
        )
        said = f"{said}; {more}" if said else more
    return chosen, said


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.1f}x the pixels" if ratio >= 1 else f"1/{1 / ratio:.0f} of the pixels"


def _sizes_that_fit(candidates: Sequence[str], image_shape: tuple[int, int, int]) -> str:
    """What an operator with images no profile fits can do: resize to a profile's size, the nearest first."""
    near = sorted(candidates, key=lambda n: abs(math.log(pixel_ratio(n, image_shape))))
    return "pass " + ", ".join(
        f"--resize {PROFILES[n].sized_for[0]}x{PROFILES[n].sized_for[1]} for {n!r}" for n in near
    )


def fit_warning(name: str, image_shape: tuple[int, int, int]) -> str | None:
    """What to tell an operator whose images are over 4x the pixels of the profile's shape, or under a quarter:
    the cost, and the profile sized nearest to them (never `tiny`, which is for unit tests)."""
    if fits(name, image_shape):
        return None
    ratio = pixel_ratio(name, image_shape)
    nearest = min((n for n in PROFILES if n != "tiny"), key=lambda n: abs(math.log(pixel_ratio(n, image_shape))))
    if ratio > 1:
        cost = (
            f"{ratio:.1f}x the pixels: each factory step and each expert image costs ~{ratio:.1f}x what the "
            f"profile was measured at"
        )
    else:
        cost = f"1/{1 / ratio:.0f} of the pixels: its models are bigger and slower than these images need"
    sized = _shape(PROFILES[name].sized_for)
    better = f"; profile {nearest!r} is sized for {_shape(PROFILES[nearest].sized_for)}" if nearest != name else ""
    return f"profile {name!r} was sized for {sized} images and these are {_shape(image_shape)}, {cost}{better}"


def site_profile(config: Config, image_shape: tuple[int, int, int], where: Path | str = "config.toml") -> Profile:
    """The configured profile, fitted to the site's images, with the config's overrides applied."""
    try:
        profile = profile_for(config.learning.profile, image_shape)
    except ValueError as exc:
        raise ConfigError(f"{where} [learning]: {exc}") from None
    return with_factory_steps(profile, config.learning.factory_steps)


def with_factory_steps(profile: Profile, steps: int) -> Profile:
    """`profile` with its factories trained `steps` steps (0: the profile's own)."""
    if not steps:
        return profile
    return dataclasses.replace(profile, factory=dataclasses.replace(profile.factory, train_steps=steps))


def expert_arch(
    config: Config,
    profile: Profile,
    num_classes: int,
    image_shape: tuple[int, int, int],
    *,
    real: int,
    synthesised: int,
) -> dict:
    """Everything besides the lineage and seed that determines an expert's weights (signed in its manifest), for a
    site of `real` images that synthesises `synthesised` classes: its epochs are the profile's over that set."""
    per_class = config.learning.synth_per_class or profile.synth_per_class
    return {
        "expert": expert_for(profile, real + per_class * synthesised).to_dict(),
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "synth_per_class": per_class,
        "profile": config.learning.profile,
    }
