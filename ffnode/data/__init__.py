"""Datasets, partitions and query images: everything that turns files into uint8 arrays."""

from ffnode.data.images import load_image_file
from ffnode.data.partition import dirichlet, silo
from ffnode.data.sources import DataError, ImageSet, default_classes, load_dataset, save_npz

__all__ = [
    "DataError",
    "ImageSet",
    "default_classes",
    "dirichlet",
    "load_dataset",
    "load_image_file",
    "save_npz",
    "silo",
]
