"""Per-class diffusion factories: config and UNet, training, sampling."""

from ffnode.factory.model import FactoryConfig, build_unet
from ffnode.factory.sample import sample_factory
from ffnode.factory.train import train_factory

__all__ = ["FactoryConfig", "build_unet", "sample_factory", "train_factory"]
