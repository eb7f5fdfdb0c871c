"""Data stage: sources -> one canonical uint8 zarr store; splits; batches on the device.

Sources
- ``cifar10``: the CIFAR-10 binary-version archive, downloaded with torchvision's
  ``download_url`` and MD5-checked; records are raw bytes (no pickle is ever loaded).
- ``imagefolder``: a torchvision ImageFolder tree (``<split>/<class>/<image>``) as a
  directory or a .tar/.tar.gz, resized and centre-cropped once.
- ``synthetic``: deterministic demo data, 10 classes of coloured shapes with noise.

The store (``dataset.zarr``) has one group per split (``train``, ``test``) holding
``images`` (sample, channel, y, x) uint8 and ``labels`` (sample,) int64, plus the class
names and the per-channel mean/std of the train split as attributes. It is written to
a temporary path and renamed, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dnndist import DnndistError, dims, integrity
from dnndist.io import atomic_path
from dnndist.provenance import attrs as provenance_attrs
from dnndist.settings import DataSettings

if TYPE_CHECKING:  # torch is imported where it is used: image-decoding worker processes start without it
    import torch

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_RECORD = 1 + 3 * 32 * 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CHUNK = 2048  # images per zarr chunk (6 MB at 32x32x3)


class DataError(DnndistError):
    """A missing, corrupt or unsafe dataset file."""


# --------------------------------------------------------------------------- archives
def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def iter_tar(
    path: str | Path, wanted: set[str] | Callable[[str], bool] | None = None
) -> Iterator[tuple[str, bytes | None]]:
    """Yield (normalised member name, bytes) for the regular files of a tar archive.

    Every member passes ``tarfile.data_filter`` (no absolute paths, no ``..``, no links
    out of the tree); nothing is written to disk. With ``wanted`` (a set of names, or a
    predicate on the name), only those members' bytes are read (others yield None), so a
    listing pass costs no memory.
    """
    keep = wanted.__contains__ if isinstance(wanted, (set, frozenset)) else wanted
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                parts = member.name.split("/")  # the components Path(name).parts has, and maybe "" or "."
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(f"{path}: unsafe archive member {member.name!r} (absolute path or '..')")
                try:
                    tarfile.data_filter(member, "/nonexistent-extraction-root")
                except tarfile.FilterError as exc:
                    raise DataError(f"{path}: unsafe archive member {member.name!r} ({exc})") from None
                if not member.isreg():
                    continue
                name = os.path.normpath(member.name)
                if keep is not None and not keep(name):
                    yield name, None
                    continue
                fh = tar.extractfile(member)
                assert fh is not None
                yield name, fh.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None


def download_cifar10(url: str, md5: str | None, dest: str | Path) -> Path:
    """Download the CIFAR-10 binary archive with torchvision and verify its MD5."""
    from torchvision.datasets.utils import download_url

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            download_url(url, str(tmp.parent), filename=tmp.name, md5=md5)
        except RuntimeError as exc:
            raise DataError(f"download of {url} failed its checksum (expected md5 {md5}): {exc}") from None
        except OSError as exc:
            raise DataError(f"download of {url} failed: {exc}") from None
    return dest


def read_cifar10_archive(path: str | Path, md5: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the binary-version CIFAR-10 archive into {split: (images NCHW uint8, labels)}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-10 archive {path} does not exist")
    if md5 is not None and (actual := md5sum(path)) != md5:
        raise DataError(f"{path}: checksum mismatch (md5 {actual}, expected {md5}); delete it to download again")
    wanted = {f"cifar-10-batches-bin/{f}" for f in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES}
    blobs = {name: blob for name, blob in iter_tar(path, wanted) if blob is not None}
    out = {}
    for split, files in (("train", CIFAR10_TRAIN_FILES), ("test", CIFAR10_TEST_FILES)):
        parts = []
        for f in files:
            name = f"cifar-10-batches-bin/{f}"
            if name not in blobs:
                raise DataError(f"{path}: member {name} missing; not a CIFAR-10 binary archive")
            raw = np.frombuffer(blobs[name], dtype=np.uint8)
            if raw.size == 0 or raw.size % CIFAR10_RECORD:
                raise DataError(
                    f"{path}: {name} has {raw.size} bytes, not a multiple of the {CIFAR10_RECORD}-byte record"
                )
            parts.append(raw.reshape(-1, CIFAR10_RECORD))
        records = np.concatenate(parts)
        labels = records[:, 0].astype(np.int64)
        if labels.max() >= len(CIFAR10_CLASSES):
            raise DataError(f"{path}: label {labels.max()} out of range in {split} split")
        images = records[:, 1:].reshape(-1, 3, 32, 32)
        out[split] = (np.ascontiguousarray(images), labels)
    return out


# --------------------------------------------------------------------------- imagefolder
@dataclass(frozen=True)
class ImageRef:
    split: str
    cls: str
    name: str  # path inside the tree or archive


def _split_of(rel: str, subdirs: Mapping[str, str]) -> tuple[str, str] | None:
    """Map a relative file path to (split, class) following ImageFolder layout."""
    if not rel.lower().endswith(IMAGE_EXTENSIONS):
        return None
    parts = _parts(rel)
    for split, sub in subdirs.items():
        sub_parts = _parts(sub) if sub else ()
        if parts[: len(sub_parts)] == sub_parts and len(parts) == len(sub_parts) + 2:
            return split, parts[len(sub_parts)]
    return None


def _parts(rel: str) -> tuple[str, ...]:
    """``Path(rel).parts``; without pathlib for a normalised POSIX name (called once an image)."""
    parts = tuple(rel.split("/"))
    if os.sep != "/" or os.altsep is not None or "" in parts or "." in parts:
        return Path(rel).parts
    return parts


def list_imagefolder(path: str | Path, subdirs: Mapping[str, str], limit_per_class: int | None) -> list[ImageRef]:
    path = Path(path)
    if path.is_dir():
        names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
        names = [name for name, _ in iter_tar(path, wanted=set())]
    else:
        raise DataError(f"image folder {path} does not exist")
    return _select_refs(path, names, subdirs, limit_per_class)


def _select_refs(
    path: Path, names: Iterable[str], subdirs: Mapping[str, str], limit_per_class: int | None
) -> list[ImageRef]:
    """The images of a listing in store order: by (split, class), then by name; the first ``limit_per_class`` of each."""
    refs: dict[tuple[str, str], list[ImageRef]] = {}
    for name in sorted(names):
        hit = _split_of(name, subdirs)
        if hit:
            refs.setdefault(hit, []).append(ImageRef(hit[0], hit[1], name))
    out = []
    for key in sorted(refs):
        out.extend(refs[key][:limit_per_class] if limit_per_class else refs[key])
    for split in subdirs:
        if not any(r.split == split for r in out):
            raise DataError(
                f"{path}: no images found for split '{split}' (expected {subdirs[split] or '.'}/<class>/<image>)"
            )
    return out


def decode_image(blob: bytes, name: str, image_size: int, resize: int) -> torch.Tensor:
    """Decode one image to RGB uint8 (3, image_size, image_size): resize shorter side, centre-crop."""
    import torch

    return torch.from_numpy(decode_array(blob, name, image_size, resize))


def decode_array(blob: bytes, name: str, image_size: int, resize: int) -> np.ndarray:
    """:func:`decode_image` as a numpy array (channel, y, x)."""
    rgb = _decode_rgb(blob, name)
    if _fits(rgb, image_size, resize):
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))
    return _resize_crop(rgb, image_size, resize)


def _decode_rgb(blob: bytes, name: str) -> np.ndarray:
    """PIL's decode of one image, converted to RGB: uint8 (y, x, channel)."""
    from PIL import Image

    try:
        with Image.open(BytesIO(blob)) as pil:
            return np.asarray(pil.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from None


def _fits(rgb: np.ndarray, image_size: int, resize: int) -> bool:
    """Whether an (y, x, channel) image needs neither resize nor crop."""
    return min(rgb.shape[:2]) == resize and rgb.shape[:2] == (image_size, image_size)


def _resize_crop(rgb: np.ndarray, image_size: int, resize: int) -> np.ndarray:
    """Resize the shorter side of an (y, x, channel) image to ``resize`` (antialiased), then
    centre-crop to ``image_size``: uint8 (channel, y, x). Torch is imported only here."""
    import torch
    from torchvision.transforms.v2 import functional as F

    img = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()  # a writable copy (PIL's array is read-only)
    if min(img.shape[-2:]) != resize:
        img = F.resize(img, [resize], antialias=True)
    if tuple(img.shape[-2:]) != (image_size, image_size):
        img = F.center_crop(img, [image_size, image_size])
    return img.contiguous().numpy()


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, which batch schedulers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS)
        return os.cpu_count() or 1


DECODE_BYTES = 4 << 20  # a decode task holds at most this many bytes of images, compressed and decoded
DECODE_BATCH = 256  # images per decode task at most


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops the pool (no traceback per worker)
    os.environ["OMP_NUM_THREADS"] = "1"  # one process per core: torch (if a resize imports it) runs single-threaded


def _decode_batch(
    items: list[tuple[str, bytes | None]], root: str | None, image_size: int, resize: int
) -> tuple[np.ndarray | None, str | None]:
    """Decode a batch of (name, bytes) in order; bytes None: read ``root/name``. Returns
    (images (n, 3, image_size, image_size) uint8, None), or (None, the DataError message of
    the first image that failed). Runs in the worker processes."""
    out = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)  # (sample, y, x, channel) as PIL gives
    for i, (name, blob) in enumerate(items):
        try:
            if blob is None:
                file = Path(root or ".") / name
                try:
                    blob = file.read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read image {file}: {exc.strerror}") from None
            rgb = _decode_rgb(blob, name)
            out[i] = rgb if _fits(rgb, image_size, resize) else _resize_crop(rgb, image_size, resize).transpose(1, 2, 0)
        except DataError as exc:
            return None, str(exc)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), None


def _decode_batches(
    batches: Iterable[list[tuple[str, bytes | None]]], root: str | None, image_size: int, resize: int, workers: int
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """:func:`_decode_batch` over ``batches``, results in order. With ``workers`` > 1 (and
    more than one batch) the batches are decoded by that many worker processes, at most
    2 x ``workers`` batches in flight, so memory stays bounded whatever the input size."""
    batches = iter(batches)
    head = [b for b in (next(batches, None), next(batches, None)) if b is not None]
    if workers <= 1 or len(head) < 2:  # serial: one process, or a single batch (no processes to start)
        for items in itertools.chain(head, batches):
            yield _decode_batch(items, root, image_size, resize)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: no inherited threads (zarr's event loop, torch's pools) or locks; data.py imports no torch
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    pending: deque = deque()
    try:
        for items in itertools.chain(head, batches):
            pending.append(pool.submit(_decode_batch, items, root, image_size, resize))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batch_limit(image_size: int) -> int:
    return max(1, min(DECODE_BATCH, DECODE_BYTES // (3 * image_size * image_size)))


def iter_imagefolder(
    path: str | Path, refs: list[ImageRef], image_size: int, resize: int, workers: int | None = None
) -> Iterator[tuple[ImageRef, np.ndarray]]:
    """Decode the listed images in ``refs`` order (reading the archive once if it is one), with
    ``workers`` processes (default :func:`default_workers`); the images do not depend on it."""
    path = Path(path)
    workers = default_workers() if workers is None else workers
    if path.is_dir():
        limit = _batch_limit(image_size)
        batches = ([(r.name, None) for r in refs[i : i + limit]] for i in range(0, len(refs), limit))
        start = 0
        with contextlib.closing(_decode_batches(batches, str(path), image_size, resize, workers)) as results:
            for images, error in results:
                if error is not None:
                    raise DataError(error)
                assert images is not None
                for i, img in enumerate(images):
                    yield refs[start + i], img
                start += len(images)
        return
    # archive: members arrive in archive order; the decoded images (small uint8 crops) are kept until all are read
    _, decoded, error = _read_archive(path, {r.name for r in refs}, image_size, resize, workers)
    if error is not None:
        raise DataError(error)
    for ref in refs:
        yield ref, decoded.pop(ref.name)


def _read_archive(
    path: Path, wanted: set[str] | Callable[[str], bool], image_size: int, resize: int, workers: int
) -> tuple[list[str], dict[str, np.ndarray], str | None]:
    """One pass over an archive: (the names of its regular files, {name: decoded image} of the
    ``wanted`` ones, the message of the first image in archive order that failed to decode or
    None). After a failure, the rest of the archive is only listed, not decoded."""
    names: list[str] = []
    decoded: dict[str, np.ndarray] = {}
    order: deque[list[str]] = deque()  # names of the batches in flight
    failed = False

    def batches() -> Iterator[list[tuple[str, bytes | None]]]:
        limit, batch, size = _batch_limit(image_size), [], 0
        for name, blob in iter_tar(path, wanted=wanted):
            names.append(name)
            if blob is None or failed:
                continue
            batch.append((name, blob))
            size += len(blob)
            if len(batch) >= limit or size >= DECODE_BYTES:
                order.append([n for n, _ in batch])
                yield batch
                batch, size = [], 0
        if batch and not failed:
            order.append([n for n, _ in batch])
            yield batch

    error = None
    with contextlib.closing(_decode_batches(batches(), None, image_size, resize, workers)) as results:
        for images, message in results:
            batch_names = order.popleft()
            if error is not None:
                continue
            if message is not None:
                error, failed = message, True
                continue
            assert images is not None
            for name, img in zip(batch_names, images):
                if name in decoded:
                    raise DataError(f"{path}: archive member {name!r} occurs twice")
                decoded[name] = img
    return names, decoded, error


# --------------------------------------------------------------------------- synthetic
def synthetic(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic demo images: 10 classes = 5 shapes x 2 colour palettes, with noise.

    Returns images (n, 3, size, size) uint8 and labels (n,) int64. Vectorised: no
    per-sample Python.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    shape, palette = labels % 5, labels // 5
    coords = torch.linspace(-1, 1, size)
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)
    cy, cx = [(torch.rand(n, 1, 1, generator=g) - 0.5) * 0.6 for _ in range(2)]
    r = 0.35 + 0.25 * torch.rand(n, 1, 1, generator=g)
    dy, dx = yy - cy, xx - cx
    dist = torch.sqrt(dy**2 + dx**2)
    inside = (dy.abs() < r) & (dx.abs() < r)
    masks = torch.stack(
        [
            dist < r,  # disk
            (dy.abs() < 0.8 * r) & (dx.abs() < 0.8 * r),  # square
            (dist - 0.75 * r).abs() < 0.22 * r,  # ring
            inside & (torch.sin(dy * 9.0 / r) > 0),  # horizontal stripes
            ((dy.abs() < 0.28 * r) & (dx.abs() < r)) | ((dx.abs() < 0.28 * r) & (dy.abs() < r)),  # cross
        ]
    )  # (5, n, size, size)
    mask = masks[shape, torch.arange(n)].unsqueeze(1)  # (n, 1, size, size)
    warm, cool = torch.tensor([0.9, 0.55, 0.2]), torch.tensor([0.2, 0.5, 0.9])
    fg = torch.where(palette.view(n, 1) == 0, warm, cool) + 0.12 * torch.randn(n, 3, generator=g)
    bg = 0.25 + 0.3 * torch.rand(n, 3, generator=g)
    tilt = 0.15 * torch.randn(n, 1, 1, 1, generator=g) * (yy + xx).unsqueeze(0)
    img = torch.where(mask, fg.view(n, 3, 1, 1), bg.view(n, 3, 1, 1) + tilt)
    img = img + 0.08 * torch.randn(n, 3, size, size, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images.numpy(), labels.numpy().astype(np.int64)


# --------------------------------------------------------------------------- store
class StoreWriter:
    """Writes splits into a zarr v3 group, chunk by chunk, with streaming channel stats."""

    def __init__(self, path: Path, classes: list[str], attrs: dict[str, Any]):
        import zarr

        self.root = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.root.attrs.update({**attrs, "classes": list(classes)})
        self.classes = list(classes)
        self.stats: dict[str, np.ndarray] = {}
        self.seen: dict[str, set[int]] = {}  # split -> labels written

    def create(self, split: str, n: int, shape: tuple[int, int, int]) -> Any:
        group = self.root.create_group(split)
        images = group.create_array(
            "images",
            shape=(n, *shape),
            chunks=(min(CHUNK, n), *shape),
            dtype="uint8",
            **integrity.checksummed(),
            config={"write_empty_chunks": True},
            dimension_names=list(dims.IMAGE_DIMS),
            attributes={"long_name": "pixel value", "units": "1/255"},
        )
        group.create_array(
            "labels",
            shape=(n,),
            chunks=(n,),
            dtype="int64",
            dimension_names=[dims.SAMPLE],
            **integrity.checksummed(),
            config={"write_empty_chunks": True},
            attributes={"long_name": "class label", "units": "class index"},
        )
        if split == "train":
            self.stats = {"n": np.zeros(1), "s": np.zeros(shape[0]), "ss": np.zeros(shape[0])}
        return images

    def write(self, split: str, start: int, images: np.ndarray, labels: np.ndarray) -> None:
        group = self.root[split]
        group["images"][start : start + len(images)] = images
        group["labels"][start : start + len(labels)] = labels
        self.seen.setdefault(split, set()).update(int(v) for v in np.unique(labels))
        if split == "train":
            x = images.astype(np.float64) / 255.0
            self.stats["n"] += x.shape[0] * x.shape[2] * x.shape[3]
            self.stats["s"] += x.sum(axis=(0, 2, 3))
            self.stats["ss"] += (x**2).sum(axis=(0, 2, 3))

    def close(self) -> None:
        """Check the splits (non-empty, at least 2 classes, labels in range), then write the train statistics."""
        for split in self.root.group_keys():
            labels = self.seen.get(split, set())
            if not labels:
                raise DataError(f"split '{split}' has no images")
            if max(labels) >= len(self.classes) or min(labels) < 0:
                raise DataError(f"split '{split}' has label {max(labels)} but there are {len(self.classes)} classes")
            if len(labels) < 2:
                raise DataError(
                    f"split '{split}' holds a single class ({self.classes[min(labels)]!r}); a classifier needs at least 2"
                )
        n, s, ss = self.stats["n"][0], self.stats["s"], self.stats["ss"]
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean**2, 0.0))
        self.root.attrs.update({"mean": [float(v) for v in mean], "std": [float(v) for v in std]})


def _write_arrays(writer: StoreWriter, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    writer.create(split, len(images), images.shape[1:])
    for start in range(0, len(images), CHUNK):
        writer.write(split, start, images[start : start + CHUNK], labels[start : start + CHUNK])


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_store(
    settings: DataSettings, out: str | Path, archive: str | Path | None = None, workers: int | None = None
) -> Path:
    """Convert the configured source into the canonical store at ``out`` (atomically).

    ``workers``: processes that decode an image folder's images (default: the CPUs this
    process may use, :func:`default_workers`); the store's bytes do not depend on it."""
    source, opts = settings.source, settings.options
    attrs = provenance_attrs(settings.config_hash, source=source)
    with atomic_path(out) as tmp:
        if source == "synthetic":
            writer = StoreWriter(tmp, [f"class{i}" for i in range(10)], attrs)
            for split, n, offset in (("train", opts["train_size"], 0), ("test", opts["test_size"], 1_000_003)):
                images, labels = synthetic(n, opts["image_size"], opts["seed"] + offset)
                _write_arrays(writer, split, images, labels)
        elif source == "cifar10":
            if archive is None:
                raise DataError("cifar10 source needs the downloaded archive")
            splits = read_cifar10_archive(archive, opts["md5"])
            writer = StoreWriter(tmp, list(CIFAR10_CLASSES), attrs)
            for split, (images, labels) in splits.items():
                _write_arrays(writer, split, images, labels)
        elif source == "imagefolder":
            writer = _build_imagefolder(tmp, opts, attrs, workers)
        else:
            raise DataError(f"unknown data source {source!r}")
        writer.close()
        if opts.get("normalize") == "imagenet":  # the statistics torchvision's pretrained weights expect
            import zarr

            zarr.open_group(str(tmp), mode="r+").attrs.update({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    _log_store(out)
    return Path(out)


def _log_store(path: str | Path) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="r")
    sizes = ", ".join(f"{s}: {root[s]['images'].shape}" for s in ("train", "test") if s in root)
    log.info(
        "wrote %s (%s; mean %s, std %s)",
        path,
        sizes,
        [round(v, 4) for v in root.attrs["mean"]],
        [round(v, 4) for v in root.attrs["std"]],
    )


def _build_imagefolder(
    tmp: Path, opts: Mapping[str, Any], attrs: dict[str, Any], workers: int | None = None
) -> StoreWriter:
    subdirs = {"train": opts["train"]}
    if opts["test"] is not None:
        subdirs["test"] = opts["test"]
    size = opts["image_size"]
    resize = opts["resize"] or size
    path, limit = Path(opts["path"]), opts["limit_per_class"]
    workers = default_workers() if workers is None else workers
    if path.is_file() and not limit:
        # an archive whose every image is wanted: list and decode in one pass; report what the
        # listing finds wrong before a decode failure, as when listing first
        names, decoded, error = _read_archive(
            path, lambda name: _split_of(name, subdirs) is not None, size, resize, workers
        )
        refs = _select_refs(path, names, subdirs, limit)
        images: Iterable[tuple[ImageRef, np.ndarray]] = ((r, decoded.pop(r.name)) for r in refs)
    else:
        refs, error = list_imagefolder(path, subdirs, limit), None
        images = iter_imagefolder(path, refs, size, resize, workers)
    classes = sorted({r.cls for r in refs if r.split == "train"})
    class_index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r.cls for r in refs} - set(classes))
    if unknown:
        raise DataError(f"{opts['path']}: test classes {unknown} do not occur in the train split")
    if error is not None:
        raise DataError(error)
    writer = StoreWriter(tmp, classes, attrs)
    counts = {s: sum(r.split == s for r in refs) for s in subdirs}
    for split in subdirs:
        writer.create(split, counts[split], (3, size, size))
    buf: dict[str, list] = {s: [] for s in subdirs}
    pos = {s: 0 for s in subdirs}

    def flush(split: str) -> None:
        if buf[split]:
            stacked = np.stack([img for _, img in buf[split]])
            labels = np.array([class_index[ref.cls] for ref, _ in buf[split]], dtype=np.int64)
            writer.write(split, pos[split], stacked, labels)
            pos[split] += len(stacked)
            buf[split].clear()

    for ref, img in images:
        buf[ref.split].append((ref, img))
        if len(buf[ref.split]) == CHUNK:
            flush(ref.split)
    for split in subdirs:
        flush(split)
    return writer


# --------------------------------------------------------------------------- reading
@dataclass
class Dataset:
    """A store loaded into tensors: uint8 images stay uint8 until a batch is prepared."""

    images: dict[str, torch.Tensor]  # split -> (N, C, H, W) uint8
    labels: dict[str, torch.Tensor]  # split -> (N,) int64
    classes: list[str]
    mean: torch.Tensor  # (C,) in [0, 1] units
    std: torch.Tensor

    def to(self, device: torch.device) -> Dataset:
        pin = device.type == "cuda"
        moved: dict[int, torch.Tensor] = {}  # splits that share a tensor (valid = test) stay shared

        def move(t: torch.Tensor) -> torch.Tensor:
            if id(t) not in moved:
                moved[id(t)] = t.pin_memory().to(device, non_blocking=True) if pin else t.to(device)
            return moved[id(t)]

        return Dataset(
            {k: move(v) for k, v in self.images.items()},
            {k: move(v) for k, v in self.labels.items()},
            self.classes,
            self.mean.to(device),
            self.std.to(device),
        )


def open_store(path: str | Path) -> Dataset:
    """Load the store's splits as tensors (decode once)."""
    import torch
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise DataError(f"{path} is not a dataset store (no zarr.json); rerun the data stage")
    integrity.verify_store(path)
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3)
        images = {s: torch.from_numpy(np.asarray(root[s]["images"][:])) for s in ("train", "test") if s in root}
        labels = {s: torch.from_numpy(np.asarray(root[s]["labels"][:])) for s in images}
        attrs = dict(root.attrs)
        return Dataset(images, labels, list(attrs["classes"]), torch.tensor(attrs["mean"]), torch.tensor(attrs["std"]))
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable dataset store ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class StoreInfo:
    classes: list[str]
    channels: int
    image_size: int


def store_info(path: str | Path) -> StoreInfo:
    """Classes and image shape of a store, without loading its images."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise DataError(f"{path} is not a dataset store (no zarr.json); rerun the data stage")
    root = zarr.open_group(str(path), mode="r", zarr_format=3)
    shape = root["train"]["images"].shape
    return StoreInfo(list(root.attrs["classes"]), int(shape[1]), int(shape[-1]))


def split_indices(n: int, valid_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/validation split of ``n`` train-store images: (train_idx, valid_idx), sorted."""
    import torch

    if valid_size >= n:
        raise DataError(f"data.valid_size={valid_size} leaves no training images (train split has {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[valid_size:].sort().values, perm[:valid_size].sort().values


def make_splits(ds: Dataset, valid_size: int, split_seed: int, valid_split: str = "train") -> Dataset:
    """train/valid(/test) splits from the store's train/test groups.

    ``valid_split`` train: ``valid_size`` images held out of the train group (seeded);
    test (the paper's split): every train image trains and the test group is the valid
    split too (the same tensors, so ``valid`` and ``test`` are one set of images)."""
    if valid_split == "test":
        if "test" not in ds.images:
            raise DataError("data.valid_split is 'test' but the dataset store has no test split")
        images = {"train": ds.images["train"], "valid": ds.images["test"], "test": ds.images["test"]}
        labels = {"train": ds.labels["train"], "valid": ds.labels["test"], "test": ds.labels["test"]}
        return Dataset(images, labels, ds.classes, ds.mean, ds.std)
    train_idx, valid_idx = split_indices(len(ds.labels["train"]), valid_size, split_seed)
    images = {"train": ds.images["train"][train_idx], "valid": ds.images["train"][valid_idx]}
    labels = {"train": ds.labels["train"][train_idx], "valid": ds.labels["train"][valid_idx]}
    if "test" in ds.images:
        images["test"], labels["test"] = ds.images["test"], ds.labels["test"]
    return Dataset(images, labels, ds.classes, ds.mean, ds.std)


RANDOM_BLOCK = 256


def random_inputs(n: int, shape: tuple[int, int, int], seed: int, start: int = 0) -> torch.Tensor:
    """Inputs ``start .. start+n`` of the 'random' split: standard Gaussian images in the model's
    (normalised) input space. Generated in seeded blocks, so any range can be made on demand
    and the split never has to be held in memory whole."""
    import torch

    blocks = []
    for b in range(start // RANDOM_BLOCK, (start + n - 1) // RANDOM_BLOCK + 1 if n else 0):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        blocks.append(torch.randn((RANDOM_BLOCK, *shape), generator=g))
    if not blocks:
        return torch.empty((0, *shape))
    offset = start - (start // RANDOM_BLOCK) * RANDOM_BLOCK
    return torch.cat(blocks)[offset : offset + n]


def prepare(
    batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, transform: str = "as_is", threshold: float = 0.2
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 model input, on the batch's device."""
    x = batch.float().div_(255.0)
    if transform == "binarize":
        return (x > threshold).float()
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
