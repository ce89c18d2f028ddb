"""Datasets and query images: everything that turns files into uint8 arrays."""

from ffnode.data.images import load_image_file
from ffnode.data.sources import DataError, ImageSet, default_classes, load_dataset, save_npz

__all__ = ["DataError", "ImageSet", "default_classes", "load_dataset", "load_image_file", "save_npz"]
