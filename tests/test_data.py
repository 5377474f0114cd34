"""Data sets: IDX and CIFAR-10 readers, folder resolution, download, spirals, loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbilevel import legendre
from mmbilevel.data import (
    DATASETS,
    DataFormatError,
    DatasetNotFoundError,
    dataloader,
    download,
    find_data_dir,
    load,
    prepare,
    read_cifar10_batch,
    read_cifar10_split,
    read_idx_images,
    read_idx_labels,
    read_idx_split,
    two_spirals,
)
from mmbilevel.data import fetch as download_module
from mmbilevel.data import locate as locate_module

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- writers of small files in the published formats ---------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_file(path: Path, payload: bytes, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_idx_folder(folder: Path, counts=(12, 5), compress: bool = True, seed: int = 0):
    """Write the four IDX files; return the arrays written per split."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count in zip(("train", "t10k"), counts):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        write_file(folder / f"{split}-images-idx3-ubyte", idx_bytes(images, 2051), compress)
        write_file(folder / f"{split}-labels-idx1-ubyte", idx_bytes(labels, 2049), compress)
        written["train" if split == "train" else "test"] = (images, labels)
    return written


def cifar_batch(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"labels": rng.integers(0, 10, size=count).tolist(),
    }


def write_cifar_folder(folder: Path, count: int = 4) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        batch = cifar_batch(count, seed)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


# --- IDX ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_idx_split_roundtrip(tmp_path, compress):
    written = write_idx_folder(tmp_path, compress=compress)
    images, labels = read_idx_split(tmp_path, "test")
    assert np.array_equal(images, written["test"][0])
    assert np.array_equal(labels, written["test"][1])


def test_idx_dotted_names_found(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.array([1, 2, 3], np.uint8)
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(images, 2051))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    assert read_idx_split(tmp_path, "test")[1].tolist() == [1, 2, 3]


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_idx_bad_magic_names_file(tmp_path, compress):
    path = write_file(tmp_path / "images", idx_bytes(np.zeros((2, 28, 28)), 2049), compress)
    with pytest.raises(DataFormatError, match="magic number 2049, expected 2051") as info:
        read_idx_images(path)
    assert path.name in str(info.value)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_idx_truncated_names_file(tmp_path, compress):
    payload = idx_bytes(np.zeros((4, 28, 28)), 2051)[:-10]
    path = write_file(tmp_path / "images", payload, compress)
    with pytest.raises(DataFormatError, match="bytes, expected") as info:
        read_idx_images(path)
    assert path.name in str(info.value)


def test_idx_wrong_header_count(tmp_path):
    payload = bytearray(idx_bytes(np.zeros(5), 2049))
    payload[4:8] = (6).to_bytes(4, "big")
    path = write_file(tmp_path / "labels", bytes(payload), compress=False)
    with pytest.raises(DataFormatError, match="13 bytes, expected 14"):
        read_idx_labels(path)


def test_idx_cut_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(200) % 10, 2049))
    path = tmp_path / "labels.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError, match="labels.gz"):
        read_idx_labels(path)


def test_idx_empty_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="too short"):
        read_idx_labels(path)


def test_idx_label_out_of_range(tmp_path):
    path = write_file(tmp_path / "labels", idx_bytes(np.array([0, 10]), 2049), compress=False)
    with pytest.raises(DataFormatError, match="label 10 out of range"):
        read_idx_labels(path, num_classes=10)


def test_idx_count_mismatch(tmp_path):
    write_idx_folder(tmp_path, compress=False)
    labels = np.zeros(4, np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    with pytest.raises(DataFormatError, match="4 labels but 5 images") as info:
        read_idx_split(tmp_path, "test")
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_idx_missing_file(tmp_path):
    write_idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        read_idx_split(tmp_path, "train")


# --- CIFAR-10 -------------------------------------------------------------------------


def test_cifar_split_shapes(tmp_path):
    batches = write_cifar_folder(tmp_path, count=4)
    images, labels = read_cifar10_split(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32)
    assert labels.dtype == np.int64
    assert labels[:4].tolist() == batches["data_batch_1"][b"labels"]


def test_cifar_pixel_layout(tmp_path):
    batch = cifar_batch(2, seed=7)
    (tmp_path / "batch").write_bytes(pickle.dumps(batch))
    images, _ = read_cifar10_batch(tmp_path / "batch")
    # Row 1 of the file: red plane first, then green at offset 1024.
    assert images[1, 1, 0, 5] == batch[b"data"][1, 1024 + 5]


@pytest.mark.parametrize(
    "content, message",
    [
        (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "shape"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels but 2"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}), "0 to 9"),
        (pickle.dumps(cifar_batch(3, 0))[:-40], "readable"),
        (b"", "readable"),
    ],
    ids=["not-dict", "wrong-shape", "wrong-dtype", "count", "label-range", "truncated", "empty"],
)
def test_cifar_corrupt_batch(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as info:
        read_cifar10_batch(path)
    assert "data_batch_1" in str(info.value)


SMALL_BATCH = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=2)
# Without image bytes, random mutations land on the pickle opcodes and the array header.
EMPTY_BATCH = pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=2)


@pytest.mark.parametrize(
    "content",
    [
        SMALL_BATCH.replace(b"latin1", b"latinX"),
        b"\x80\x04\x96\xff\xff\xff\xff\xff\xff\xff\xff.",
        b"S'abc\n.",
        SMALL_BATCH.replace(b"X\x02\x00\x00\x00u1", b"X\x02\x00\x00\x00,1"),
        b"\x80\x02}q\x00(X\x04\x00\x00\x00datah\x05u.",
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1], [2, 3]]}),
    ],
    ids=[
        "unknown-encoding",
        "huge-length",
        "bad-string-literal",
        "bad-dtype-string",
        "missing-memo",
        "ragged-labels",
    ],
)
def test_cifar_mutated_batch_format_error(tmp_path, content):
    path = tmp_path / "data_batch_2"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as info:
        read_cifar10_batch(path)
    assert "data_batch_2" in str(info.value)


def test_cifar_random_mutations_format_error(tmp_path):
    # Overwrite 1 to 4 random bytes of a valid batch, and truncate every third
    # mutant. Every failure must surface as a DataFormatError naming the file.
    rng = np.random.default_rng(0)
    path = tmp_path / "test_batch"
    for trial in range(300):
        mutant = bytearray(EMPTY_BATCH)
        for _ in range(rng.integers(1, 5)):
            mutant[rng.integers(len(mutant))] = rng.integers(256)
        if trial % 3 == 0:
            mutant = mutant[: rng.integers(len(mutant))]
        path.write_bytes(bytes(mutant))
        try:
            read_cifar10_batch(path)
        except DataFormatError as error:
            assert "test_batch" in str(error), bytes(mutant)


def test_cifar_rejects_code_in_pickle(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(DataFormatError, match="not allowed"):
        read_cifar10_batch(path)


# --- data folder resolution -----------------------------------------------------------


@pytest.fixture
def isolated_roots(tmp_path, monkeypatch):
    """Point the environment variable and the system location at empty temporary folders."""
    env_root, system_root = tmp_path / "env", tmp_path / "system"
    env_root.mkdir()
    system_root.mkdir()
    monkeypatch.setenv("MMBILEVEL_DATA", str(env_root))
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", system_root)
    return env_root, system_root


def test_locate_explicit_dir_first(tmp_path, isolated_roots):
    env_root, system_root = isolated_roots
    write_idx_folder(env_root / "mnist")
    write_idx_folder(system_root / "mnist")
    explicit = tmp_path / "explicit"
    write_idx_folder(explicit)
    assert find_data_dir("mnist", explicit) == explicit


def test_locate_explicit_dir_subfolder(tmp_path, isolated_roots):
    write_idx_folder(tmp_path / "mine" / "fashion-mnist")
    assert find_data_dir("fashion-mnist", tmp_path / "mine") == tmp_path / "mine" / "fashion-mnist"


def test_locate_explicit_dir_exclusive(tmp_path, isolated_roots):
    env_root, _ = isolated_roots
    write_idx_folder(env_root / "mnist")
    with pytest.raises(DatasetNotFoundError):
        find_data_dir("mnist", tmp_path / "empty")


def test_locate_env_before_system(isolated_roots):
    env_root, system_root = isolated_roots
    write_idx_folder(env_root / "mnist")
    write_idx_folder(system_root / "mnist")
    assert find_data_dir("mnist") == env_root / "mnist"


def test_locate_system_fallback(isolated_roots):
    _, system_root = isolated_roots
    write_idx_folder(system_root / "fashion-mnist")
    assert find_data_dir("fashion-mnist") == system_root / "fashion-mnist"


def test_locate_cifar_inner_folder(tmp_path, isolated_roots):
    write_cifar_folder(tmp_path / "cifar10" / "cifar-10-batches-py")
    found = find_data_dir("cifar10", tmp_path)
    assert found == tmp_path / "cifar10" / "cifar-10-batches-py"


def test_locate_skips_incomplete_folder(isolated_roots):
    env_root, system_root = isolated_roots
    write_idx_folder(env_root / "mnist")
    (env_root / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    write_idx_folder(system_root / "mnist")
    assert find_data_dir("mnist") == system_root / "mnist"


def test_missing_dataset_message(isolated_roots):
    env_root, system_root = isolated_roots
    with pytest.raises(DatasetNotFoundError) as info:
        find_data_dir("fashion-mnist")
    message = str(info.value)
    assert str(env_root / "fashion-mnist") in message
    assert str(system_root / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "mmbilevel.data.download('fashion-mnist', ROOT)" in message


def test_missing_dataset_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MMBILEVEL_DATA", raising=False)
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="MMBILEVEL_DATA=ROOT"):
        find_data_dir("cifar10")


# --- download -------------------------------------------------------------------------


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_download_file_url(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_idx_folder(mirror)
    files = tuple(
        (path.name, md5_of(path.read_bytes())) for path in sorted(mirror.iterdir())
    )
    resource = download_module.Resource(base_url="unused", files=files)
    monkeypatch.setitem(download_module.RESOURCES, "mnist", resource)

    folder = download("mnist", tmp_path / "root", base_url=mirror.as_uri())
    assert folder == tmp_path / "root" / "mnist"
    assert read_idx_split(folder, "train")[0].shape == (12, 28, 28)


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train-images-idx3-ubyte.gz").write_bytes(b"not the published file")
    resource = download_module.Resource(
        base_url="unused", files=(("train-images-idx3-ubyte.gz", "0" * 32),)
    )
    monkeypatch.setitem(download_module.RESOURCES, "fashion-mnist", resource)

    with pytest.raises(OSError, match="checksum mismatch"):
        download("fashion-mnist", tmp_path / "root", base_url=mirror.as_uri())
    assert list((tmp_path / "root" / "fashion-mnist").iterdir()) == []


def test_download_extracts_cifar(tmp_path, monkeypatch):
    source = tmp_path / "source" / "cifar-10-batches-py"
    write_cifar_folder(source)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    payload = archive.getvalue()
    resource = download_module.Resource(
        base_url="unused", files=(("cifar-10-python.tar.gz", md5_of(payload)),), extract=True
    )
    monkeypatch.setitem(download_module.RESOURCES, "cifar10", resource)
    requested = []

    def opener(url, timeout):
        requested.append(url)
        return io.BytesIO(payload)

    download("cifar10", tmp_path / "root", base_url="https://mirror.invalid/x", opener=opener)
    assert requested == ["https://mirror.invalid/x/cifar-10-python.tar.gz"]
    assert find_data_dir("cifar10", tmp_path / "root").name == "cifar-10-batches-py"


def test_download_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="no download location"):
        download("two-spiral", tmp_path)


# --- loaders --------------------------------------------------------------------------


def test_registry_names():
    assert DATASETS.names() == ["cifar10", "fashion-mnist", "mnist", "two-spiral"]


def test_registry_unknown_name():
    with pytest.raises(ValueError, match="valid names are: cifar10, fashion-mnist"):
        DATASETS.get("imagenet")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_load_idx_tensors(tmp_path, dtype):
    written = write_idx_folder(tmp_path / "mnist")
    x, y = load("mnist", tmp_path, "train", dtype=dtype)
    assert x.shape == (12, 1, 28, 28)
    assert x.dtype == dtype
    assert y.dtype == torch.int64
    assert torch.equal(x[3, 0] * 255, torch.from_numpy(written["train"][0][3]).to(dtype))


def test_load_limit(tmp_path):
    written = write_idx_folder(tmp_path)
    x, y = load("fashion-mnist", tmp_path, "test", limit=3)
    assert x.shape[0] == 3
    assert y.tolist() == written["test"][1][:3].tolist()


def test_load_cifar_tensors(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py", count=3)
    x, y = load("cifar10", tmp_path, "test")
    assert x.shape == (3, 3, 32, 32)
    assert float(x.max()) <= 1.0


def test_load_rejects_bad_split(tmp_path):
    write_idx_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load("mnist", tmp_path, "valid")


def test_load_rejects_options_for_images(tmp_path):
    write_idx_folder(tmp_path)
    with pytest.raises(ValueError, match="takes no options"):
        load("mnist", tmp_path, turns=2)


def test_prepare_flattens_into_domain(tmp_path):
    write_idx_folder(tmp_path)
    x, _ = prepare("mnist", "sigmoid", data_dir=tmp_path, margin=0.01)
    assert x.shape == (12, 784)
    assert float(x.min()) >= 0.01 - 1e-7
    assert float(x.max()) <= 0.99 + 1e-7


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "isru", "elliot", "scaled_arctan"])
def test_prepare_tiny_margin_float32_interior(tmp_path, name):
    # Pixel 1 maps to 1 − 1e-9, which is 1.0 in float32, an end of dom φ, unless moved inward.
    write_idx_folder(tmp_path, counts=(4, 2))
    x, _ = prepare("mnist", name, data_dir=tmp_path, dtype=torch.float32, margin=1e-9)
    assert x.max() < 1.0
    assert x.min() > float(legendre.get(name).domain[0])


def test_prepare_rejects_zero_margin(tmp_path):
    with pytest.raises(ValueError, match="margin=0.0"):
        prepare("mnist", "sigmoid", data_dir=tmp_path / "absent", margin=0.0)


def test_prepare_image_shaped(tmp_path):
    write_cifar_folder(tmp_path, count=2)
    x, _ = prepare("cifar10", "tanh", split="test", flatten=False, data_dir=tmp_path)
    assert x.shape == (2, 3, 32, 32)


def test_dataloader_batches(tmp_path):
    write_idx_folder(tmp_path)
    loader = dataloader("mnist", "arctan", data_dir=tmp_path, batch_size=5, seed=1)
    shapes = [tuple(xb.shape) for xb, _ in loader]
    assert shapes == [(5, 784), (5, 784), (2, 784)]


def test_dataloader_order_reproducible(tmp_path):
    write_idx_folder(tmp_path)
    first = [yb.tolist() for _, yb in dataloader("mnist", "arctan", data_dir=tmp_path, seed=4)]
    second = [yb.tolist() for _, yb in dataloader("mnist", "arctan", data_dir=tmp_path, seed=4)]
    assert first == second


# --- two spirals ----------------------------------------------------------------------


def test_spiral_shapes_and_labels():
    x, y = two_spirals(points_per_spiral=30)
    assert x.shape == (60, 2)
    assert y.tolist() == [0, 1] * 30


def test_spiral_deterministic_for_seed():
    first = two_spirals(noise=0.05, seed=11)[0]
    second = two_spirals(noise=0.05, seed=11)[0]
    assert torch.equal(first, second)


def test_spiral_seed_changes_noise():
    assert not torch.equal(two_spirals(noise=0.05, seed=1)[0], two_spirals(noise=0.05, seed=2)[0])


def test_spiral_leaves_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    two_spirals(noise=0.1, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_spiral_classes_point_symmetric():
    x, _ = two_spirals(points_per_spiral=40, turns=2.0)
    assert torch.equal(x[1::2], -x[0::2])


def test_spiral_angle_covers_turns():
    # Unwrapped polar angle of class 0 runs from 0 to 2π·turns (closed form of the curve).
    x, _ = two_spirals(points_per_spiral=200, turns=1.5, dtype=torch.float64)
    angle = np.unwrap(np.arctan2(x[0::2, 1].numpy(), x[0::2, 0].numpy()))
    assert angle[-1] - angle[0] == pytest.approx(2 * np.pi * 1.5, abs=1e-9)


def test_spiral_inside_unit_disc():
    x, _ = two_spirals(turns=3.0)
    assert float(x.norm(dim=1).max()) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    "kwargs",
    [{"points_per_spiral": 1}, {"turns": 0.0}, {"noise": -0.1}, {"offset": 1.0}],
    ids=["points", "turns", "noise", "offset"],
)
def test_spiral_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        two_spirals(**kwargs)


def test_spiral_test_split_differs():
    train, _ = load("two-spiral")
    test, _ = load("two-spiral", split="test")
    assert train.shape == test.shape
    assert float((train - test).abs().max()) > 1e-3


def test_spiral_options_passed():
    x, _ = load("two-spiral", points_per_spiral=25, limit=10)
    assert x.shape == (10, 2)


def test_spiral_prepare_identity_for_arctan():
    # The spirals lie in [−1, 1]², inside dom φ = ]−π/2, π/2[ of arctan, so
    # the preprocessing leaves them unchanged.
    raw, _ = load("two-spiral")
    prepared, _ = prepare("two-spiral", "arctan")
    assert torch.equal(prepared, raw)


# --- real Fashion-MNIST ---------------------------------------------------------------


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_real_fashion_mnist_slice():
    x, y = load("fashion-mnist", FASHION_SYSTEM_DIR, "test", limit=500)
    assert x.shape == (500, 1, 28, 28)
    assert 0 <= int(y.min())
    assert int(y.max()) <= 9
    assert len(torch.unique(y)) == 10


def test_locate_env_names_data_folder(tmp_path, monkeypatch):
    folder = tmp_path / "mnist-files"
    write_idx_folder(folder)
    monkeypatch.setenv("MMBILEVEL_DATA", str(folder))
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path / "system")
    assert find_data_dir("mnist") == folder


def test_locate_env_root_still_works(isolated_roots):
    env_root, _ = isolated_roots
    write_idx_folder(env_root / "fashion-mnist")
    assert find_data_dir("fashion-mnist") == env_root / "fashion-mnist"
