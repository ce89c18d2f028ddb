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
        (lambda root: (root / "empty").mkdir(parents=True), "empty has no images"),
        (lambda root: (root / "dicom" / "x.dcm").parent.mkdir() or (root / "dicom" / "x.dcm").write_text(""), "1 .dcm"),
        (
            lambda root: _png(root / "a" / "x.png", size=(9, 8)),
            r"2 sizes: 1 of 8x8 .*ok.png.*1 of 8x9 .*x.png.*--resize",
        ),
        (lambda root: (root / "a" / "x.png").write_bytes(b"junk"), "cannot read image .*x.png"),
        (lambda root: Image.fromarray(np.full((8, 8), 7.0, np.float32)).save(root / "a" / "f.tif"), "f.tif.*'F'"),
        (lambda root: Image.new("I", (8, 8), -3).save(root / "a" / "i.tif"), "i.tif.*'I'.*-3..-3"),
        (lambda root: Image.new("LAB", (8, 8)).save(root / "a" / "h.tif"), "h.tif has PIL mode 'LAB'"),
        (
            lambda root: Image.new("L", (8, 8)).save(
                root / "a" / "s.tif", save_all=True, append_images=[Image.new("L", (8, 8))]
            ),
            "s.tif holds 2 frames",
        ),
    ],
    ids=["empty-class", "dicom-only", "mixed-size", "corrupt", "float-out-of-range", "negative-int", "lab", "stack"],
)
def test_image_folder_errors(tmp_path: Path, setup, message: str) -> None:
    _png(tmp_path / "a" / "ok.png")
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path))


def _png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16"
    image.save(path)


def test_16_bit_pngs_keep_their_pixels(tmp_path: Path) -> None:
    """A folder of real I;16 PNGs, values spread over 0..65535: read as value/257, not clipped to white."""
    rng = np.random.default_rng(0)
    raw = {f"{c}/{i}.png": rng.integers(0, 65536, (16, 16)) for c in ("ct", "mri") for i in range(4)}
    raw["ct/0.png"][0, :2] = (0, 65535)  # the full range
    for name, values in raw.items():
        _png16(tmp_path / name, values)
    with Image.open(tmp_path / "ct/0.png") as im:
        assert im.mode == "I;16"  # what PIL reads, the mode the old loader clipped
    data = load_dataset(str(tmp_path))
    expected = np.stack([np.round(v / 257) for v in raw.values()]).astype(np.uint8)[..., None]
    assert data.images.dtype == np.uint8 and np.array_equal(data.images, expected)
    assert data.images.min() == 0 and data.images.max() == 255
    assert (data.images == 255).mean() < 0.01 and 120 < data.images.mean() < 135  # uniform, not 99.9 % white
    assert any("read 8 16-bit images" in note and "as 16-bit" in note for note in data.notes)


def test_12_bit_data_in_16_bit_files_is_scaled_by_its_range(tmp_path: Path) -> None:
    values = np.arange(256).reshape(16, 16) * 16  # 0..4080: 12-bit data, as CT and X-ray exports store it
    _png16(tmp_path / "a" / "x.png", values)
    _png16(tmp_path / "b" / "y.png", values[::-1])
    data = load_dataset(str(tmp_path))
    assert np.array_equal(data.images[0, ..., 0], np.round(values * 255 / 4095).astype(np.uint8))
    assert any("as 12-bit: 0..4,095" in note for note in data.notes)
    # a query image is read by the same rules (its own range)
    assert np.array_equal(load_image_file(tmp_path / "a" / "x.png", (16, 16, 1)), data.images[0])
    assert load_image_file(tmp_path / "a" / "x.png", (16, 16, 3)).shape == (16, 16, 3)


def test_a_query_is_read_at_the_training_datas_bit_depth(tmp_path: Path) -> None:
    """A dark 16-bit query (largest value 3,000) from full-range 16-bit training data: read as the training data
    was (3,000 / 257 = 12), not stretched by its own 12-bit range (187, 16x brighter)."""
    _png16(tmp_path / "train" / "a" / "x.png", np.full((8, 8), 65535))
    _png16(tmp_path / "train" / "b" / "y.png", np.full((8, 8), 3000))
    data = load_dataset(str(tmp_path / "train"))
    assert data.bit_depth == 16 and data.images[1, 0, 0, 0] == 12
    _png16(tmp_path / "query.png", np.full((8, 8), 3000))
    assert load_image_file(tmp_path / "query.png", (8, 8, 1), data.bit_depth)[0, 0, 0] == 12
    assert load_image_file(tmp_path / "query.png", (8, 8, 1))[0, 0, 0] == 187  # its own range: what init prevents
    with pytest.raises(DataError, match="beyond the 12-bit range"):  # brighter than the training data can be
        load_image_file(tmp_path / "train" / "a" / "x.png", (8, 8, 1), 12)
    assert load_dataset(str(tmp_path / "train"), bit_depth=16).bit_depth == 16


def test_resizing_keeps_a_folders_bit_depth(tmp_path: Path) -> None:
    """Lanczos overshoots at a sharp edge: a 12-bit folder must not be read as 14-bit (4x darker) once resized."""
    edge = np.zeros((16, 16), np.uint16)
    edge[:, 8:] = 4095
    _png16(tmp_path / "a" / "x.png", edge)
    _png16(tmp_path / "b" / "y.png", edge.T)
    data = load_dataset(str(tmp_path), size=(6, 6))
    assert data.bit_depth == 12 and data.images.max() == 255


def test_other_modes_are_read_as_meant(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    files = {
        "g/l.png": Image.fromarray(gray),
        "g/la.png": Image.fromarray(np.stack([gray, np.full_like(gray, 9)], -1), mode="LA"),
        "g/i.tif": Image.fromarray(gray.astype(np.int32)),  # 32-bit integer holding 8-bit values
        "g/f.tif": Image.fromarray(gray.astype(np.float32) / 255),  # float in 0..1
        "g/b.bmp": Image.fromarray(gray),
        "g/w.webp": Image.fromarray(gray),
    }
    for name, image in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / name, **({"lossless": True} if name.endswith(".webp") else {}))
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (6, 8, 8, 1)
    assert all(np.array_equal(image[..., 0], gray) for image in data.images), "every mode reads the same pixels"
    colour = tmp_path / "colour"
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(colour / "c" / "rgb.png") if (colour / "c").mkdir(parents=True) is None else None
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)]), mode="RGBA").save(colour / "c" / "rgba.png")
    Image.fromarray(rgb).convert("P").save(colour / "c" / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(colour / "c" / "cmyk.tif")
    data = load_dataset(str(colour))
    assert data.images.shape == (4, 8, 8, 3)
    by_name = dict(zip(["cmyk", "p", "rgb", "rgba"], data.images, strict=True))  # sorted file order
    assert np.array_equal(by_name["rgb"], rgb) and np.array_equal(by_name["rgba"], rgb)
    assert np.array_equal(by_name["cmyk"], rgb)  # PIL's CMYK round trip is exact for RGB input
    assert np.abs(by_name["p"].astype(int) - rgb).mean() < 40  # a palette quantises


def test_skipped_files_are_counted_and_more_formats_read(tmp_path: Path) -> None:
    for name in ("a/1.png", "a/2.tif", "a/3.tiff", "b/4.bmp", "b/5.jpg", "b/6.webp"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 50).save(path)
    for name in ("a/notes.txt", "b/scan.dcm", "b/labels.txt", "README", "a/.DS_Store", ".cache/x.png"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not an image")
    _png(tmp_path / "a" / ".thumbs" / "t.png")  # a hidden folder inside a class
    _png(tmp_path.parent / "elsewhere" / "e.png")
    (tmp_path / "b" / "p03").symlink_to(tmp_path.parent / "elsewhere")  # a link to a folder: counted, not followed
    data = load_dataset(str(tmp_path))
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.notes[0] == (
        f"skipped 8 files in {tmp_path}: 3 hidden, 2 .txt, 1 .dcm, 1 links to folders (not followed: copy the images "
        "in), 1 without suffix"
    )


def test_nested_patient_folders_are_one_class_read_in_order(tmp_path: Path) -> None:
    for value, name in enumerate(["b/p02/1.png", "a/p10/x/2.png", "a/p01/9.png", "a/p01/10.png", "a/top.png"]):
        _png(tmp_path / name, value=value * 10)
    data = load_dataset(str(tmp_path))
    assert data.classes == ("a", "b") and data.labels.tolist() == [0, 0, 0, 0, 1]
    # sorted by path parts: a/p01/10.png, a/p01/9.png, a/p10/x/2.png, a/top.png, b/p02/1.png
    assert data.images[:, 0, 0, 0].tolist() == [30, 20, 10, 40, 0]
    again = load_dataset(str(tmp_path))
    assert np.array_equal(data.images, again.images)


def test_sizes_are_resized_only_when_asked(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png", size=(16, 16), value=100)
    _png(tmp_path / "b" / "small.png", size=(8, 8), value=100)
    _png16(tmp_path / "b" / "deep.png", np.full((12, 12), 65535))
    with pytest.raises(DataError, match=r"3 sizes: 3 of 16x16 .*--resize 16x16"):
        load_dataset(str(tmp_path))
    data = load_dataset(str(tmp_path), size=(8, 8))
    assert data.images.shape == (5, 8, 8, 1) and data.resized == 4
    # sorted: a/0..2.png (16x16), b/deep.png (12x12, 16-bit white), b/small.png (8x8, kept as it is)
    assert (data.images[[0, 1, 2, 4]] == 100).all() and (data.images[3] == 255).all()
    assert "resized 3 from 16x16, 1 from 12x12 to 8x8" in data.notes
    npz = tmp_path / "set.npz"
    save_npz(npz, {"train": (np.full((2, 16, 16, 3), 7, np.uint8), np.array([0, 1]))})
    small = load_dataset(str(npz), size=(4, 4))
    assert small.images.shape == (2, 4, 4, 3) and (small.images == 7).all() and small.resized == 2
    assert small.notes == ("resized 2 images from 16x16 to 4x4",)
    assert load_dataset(str(npz), size=(16, 16)).resized == 0


def test_grayscale_and_colour_in_one_folder(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "gray.png", value=40)
    _png(tmp_path / "a" / "rgb-gray.jpg", mode="RGB", value=(90, 90, 90))
    data = load_dataset(str(tmp_path))  # the colour file is gray: one channel, lossless
    assert data.images.shape == (2, 8, 8, 1) and any("as grayscale" in n for n in data.notes)
    _png(tmp_path / "b" / "red.png", mode="RGB", value=(200, 10, 10))
    data = load_dataset(str(tmp_path))  # a real colour file: all RGB
    assert data.images.shape == (3, 8, 8, 3) and data.images[0, 0, 0].tolist() == [40, 40, 40]
    assert any("read 1 grayscale images" in n and "as RGB" in n for n in data.notes)


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
