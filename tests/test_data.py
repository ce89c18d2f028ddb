"""Datasets, partitions and query images: good inputs load exactly, bad inputs fail with a clear DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffnode.data import DataError, default_classes, load_dataset, load_image_file, save_npz
from ffnode.data.sources import cache_dir, data_dir
from harness.partition import dirichlet, silo


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L", value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


# -----------------------------------------------------------------------------
# digits and .npz files


def test_digits_split_is_fixed_and_stratified() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.images.max() == 255 and train.classes == tuple("0123456789")
    assert np.bincount(test.labels).min() >= 35  # stratified: every class ~36 test images
    again = load_dataset("digits")
    assert np.array_equal(train.images, again.images) and np.array_equal(train.labels, again.labels)


def test_federation_classes_remap_labels() -> None:
    classes = tuple(reversed("0123456789"))
    remapped = load_dataset("digits", split="test", classes=classes)
    plain = load_dataset("digits", split="test")
    assert remapped.classes == classes
    assert np.array_equal(remapped.labels, 9 - plain.labels)
    with pytest.raises(DataError, match="'9'.*not in the federation"):
        load_dataset("digits", classes=tuple("012345678"))


def test_npz_round_trip_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = tmp_path / "set.npz"
    save_npz(path, {"train": (images, labels), "test": (images[:2], labels[:2])})
    data = load_dataset(str(path))
    assert np.array_equal(data.images, images) and np.array_equal(data.labels, labels)
    assert data.classes == ("0", "1", "2")
    with pytest.raises(DataError, match="no 'val_images'"):
        load_dataset(str(path), split="val")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read .*bad.npz"):
        load_dataset(str(bad))
    with pytest.raises(DataError, match="not a known name"):
        load_dataset(str(tmp_path / "missing.npz"))


def test_npz_class_names_name_a_share_of_a_named_dataset(tmp_path: Path) -> None:
    """A silo site's file holds one class of eight; its class_names keep the label meaning the federation's."""
    path = tmp_path / "site.npz"
    names = ("basophil", "eosinophil", "erythroblast")
    save_npz(path, {"train": (np.zeros((2, 4, 4, 3), np.uint8), np.array([2, 2]))}, names)
    data = load_dataset(str(path), classes=("erythroblast", "basophil", "eosinophil"))
    assert data.classes == ("erythroblast", "basophil", "eosinophil") and data.labels.tolist() == [0, 0]
    save_npz(path, {"train": (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 3]))}, names)
    with pytest.raises(DataError, match="must be 0..2, one per class name"):
        load_dataset(str(path))


def test_grayscale_npz_gets_a_channel_axis(tmp_path: Path) -> None:
    path = tmp_path / "gray.npz"
    save_npz(path, {"train": (np.zeros((3, 5, 5), np.uint8), np.array([0, 1, 1]))})
    assert load_dataset(str(path)).images.shape == (3, 5, 5, 1)


# -----------------------------------------------------------------------------
# image folders


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        _png(tmp_path / split / "cat" / "a.png", value=10)
        _png(tmp_path / split / "ant" / "b.jpg", value=200)
    data = load_dataset(str(tmp_path), split="test")
    assert data.classes == ("ant", "cat")  # folder names, sorted
    assert data.images.shape == (2, 8, 8, 1) and list(data.labels) == [0, 1]
    fed = load_dataset(str(tmp_path), classes=("bee", "cat", "ant"))
    assert list(fed.labels) == [2, 1]
    with pytest.raises(DataError, match="no 'val'"):
        load_dataset(str(tmp_path), split="val")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: (root / "empty").mkdir(parents=True), "has no .png/.jpg/.jpeg images"),
        (lambda root: _png(root / "a" / "x.png", size=(9, 8)), r"x.png is \(8, 9, 1\)"),
        (lambda root: _png(root / "a" / "x.png", mode="RGB"), r"x.png is \(8, 8, 3\)"),
        (lambda root: (root / "a" / "x.png").write_bytes(b"junk"), "cannot read image"),
    ],
    ids=["empty-class", "mixed-size", "mixed-channels", "corrupt"],
)
def test_image_folder_errors(tmp_path: Path, setup, message: str) -> None:
    _png(tmp_path / "a" / "ok.png")
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path))


def test_image_folder_class_outside_federation(tmp_path: Path) -> None:
    _png(tmp_path / "dog" / "a.png")
    with pytest.raises(DataError, match="'dog'.*not in the federation"):
        load_dataset(str(tmp_path), classes=("cat",))


def test_folder_without_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(str(tmp_path))


def test_named_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFNODE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="bloodmnist_pbc_28.npz.*FFNODE_DATA_DIR"):
        load_dataset("bloodmnist")


# -----------------------------------------------------------------------------
# the real files in the shared data dir


def _need(name: str) -> None:
    if not (data_dir() / name).is_file():
        pytest.skip(f"{name} not found in {data_dir()}: set FFNODE_DATA_DIR to the folder with the shared datasets")


def test_real_bloodmnist() -> None:
    _need("bloodmnist_pbc_28.npz")
    test = load_dataset("bloodmnist", split="test")
    assert test.images.shape == (3419, 28, 28, 3) and len(test.classes) == 8
    assert test.classes == default_classes("bloodmnist") and test.classes[3] == "immature granulocyte"


def test_real_retinamnist() -> None:
    _need("retinamnist.npz")
    val = load_dataset("retinamnist", split="val")
    assert val.images.shape == (120, 28, 28, 3) and set(val.labels) <= set(range(5))


def test_real_cifar10_when_unpacked() -> None:
    _need("cifar10_jpg.tar.xz")
    if not (cache_dir() / "cifar10_jpg" / ".unpacked").exists():
        pytest.skip("cifar10 is not unpacked in the cache yet (takes ~1 min once): load_dataset('cifar10') does it")
    test = load_dataset("cifar10", split="test")
    assert test.images.shape == (10000, 32, 32, 3) and test.classes[0] == "airplane"
    assert np.bincount(test.labels).tolist() == [1000] * 10


# -----------------------------------------------------------------------------
# partitions


def test_silo_one_class_per_node_and_spread() -> None:
    labels = np.repeat(np.arange(4), 5)
    parts = silo(labels, 4)
    assert [set(labels[p]) for p in parts] == [{0}, {1}, {2}, {3}]
    spread = silo(labels, 8)  # each class over two nodes
    assert [set(labels[p]) for p in spread] == [{0}, {1}, {2}, {3}] * 2
    assert sorted(np.concatenate(spread).tolist()) == list(range(20))
    assert [set(labels[p]) for p in silo(labels, 2)] == [{0, 2}, {1, 3}]


def test_dirichlet_covers_every_index_once_and_is_seeded() -> None:
    labels = np.repeat(np.arange(5), 40)
    parts = dirichlet(labels, 6, alpha=0.3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    assert all(len(p) for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, dirichlet(labels, 6, alpha=0.3, seed=1), strict=True))


# -----------------------------------------------------------------------------
# query images


def test_load_image_file(tmp_path: Path) -> None:
    _png(tmp_path / "q.png", mode="RGB", value=(10, 20, 30))
    image = load_image_file(tmp_path / "q.png", (8, 8, 3))
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and image[0, 0].tolist() == [10, 20, 30]
    assert load_image_file(tmp_path / "q.png", (8, 8, 1)).shape == (8, 8, 1)
    with pytest.raises(DataError, match="q.png is 8x8 pixels, expected 28x28"):
        load_image_file(tmp_path / "q.png", (28, 28, 3))
    (tmp_path / "n.png").write_text("hello")
    with pytest.raises(DataError, match="n.png is not an image"):
        load_image_file(tmp_path / "n.png", (8, 8, 3))
    with pytest.raises(DataError, match="does not exist"):
        load_image_file(tmp_path / "missing.png", (8, 8, 3))
