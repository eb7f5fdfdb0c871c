"""Data sources: what the data stage reads, as (images, labels) uint8/int64 arrays or decoded images.

- ``cifar10``: the CIFAR-10 binary-version archive, downloaded with torchvision's
  ``download_url`` and MD5-checked; records are raw bytes (no pickle is ever loaded).
- ``imagefolder``: a torchvision ImageFolder tree (``<split>/<class>/<image>``) as a
  directory or a .tar/.tar.gz, resized and centre-cropped once (by worker processes).
- ``synthetic``: deterministic demo data, 10 classes of coloured shapes with noise.

Every archive member passes ``tarfile.data_filter``; nothing is extracted to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnndist import DnndistError
from dnndist.io import atomic_path

if TYPE_CHECKING:  # torch is imported where it is used: image-decoding worker processes start without it
    import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_RECORD = 1 + 3 * 32 * 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_MEMBER_BYTES = 256 << 20  # an archive member is refused before it is read past this (CIFAR-10's are 30 MB)
MAX_IMAGE_PIXELS = 40_000_000  # an image is refused before it is decoded past this (an 8000 x 5000 photo)


class DataError(DnndistError):
    """A missing, corrupt or unsafe dataset file (or a store that is not one)."""


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
    out of the tree, no special files); nothing is written to disk. A hard link inside the
    tree reads as the file it links to; a symbolic link is refused by name; a member over
    MAX_MEMBER_BYTES is refused before it is read. With
    ``wanted`` (a set of names, or a predicate on the name), only those members' bytes are
    read (others yield None), so a listing pass costs no memory.
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
                if member.issym():  # inside the tree (data_filter refuses the others): skipping it would drop a file
                    raise DataError(f"{path}: archive member {member.name!r} is a symbolic link: store the file itself")
                if not (member.isreg() or member.islnk()):  # a folder (data_filter refuses FIFOs and devices)
                    continue
                name = os.path.normpath(member.name)
                if keep is not None and not keep(name):
                    yield name, None
                    continue
                if member.size > MAX_MEMBER_BYTES:  # refused before a byte is read
                    raise _too_big(path, member.name)
                try:
                    fh = tar.extractfile(member)  # a hard link reads as the member it links to
                except KeyError:
                    raise DataError(f"{path}: archive member {member.name!r} links to a missing member") from None
                assert fh is not None
                blob = fh.read(MAX_MEMBER_BYTES + 1)  # a hard link's size is its target's: bounded here
                if len(blob) > MAX_MEMBER_BYTES:
                    raise _too_big(path, member.name)
                yield name, blob
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None


def _too_big(path: str | Path, member: str) -> DataError:
    return DataError(f"{path}: archive member {member!r} is over the {MAX_MEMBER_BYTES:,} bytes a member may have")


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
            raise DataError(
                f"download of {url} failed: {exc}; offline? put the archive at {dest}, or read a local "
                "copy: data.source imagefolder (presets/cifar10-jpeg.yaml reads a JPEG copy)"
            ) from None
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


def _split_of(rel: str, subdirs: Mapping[str, str], images_only: bool = True) -> tuple[str, str] | None:
    """Map a relative file path to (split, class) following ImageFolder layout."""
    if images_only and not rel.lower().endswith(IMAGE_EXTENSIONS):
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
        entries = [p for p in path.rglob("*") if not p.is_dir()]
        odd = [
            p for p in entries if not p.is_file() and _split_of(str(p.relative_to(path)), subdirs, images_only=False)
        ]
        if odd:  # a FIFO would block the reader, a broken link would vanish from the dataset
            raise DataError(f"{odd[0]} is not a regular file (a FIFO, socket, device or broken link): remove it")
        names = [str(p.relative_to(path)) for p in entries]
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
    classes: set[tuple[str, str]] = set()  # every class folder that holds a file, image or not
    for name in sorted(names):
        hit = _split_of(name, subdirs, images_only=False)
        if hit:
            classes.add(hit)
            if name.lower().endswith(IMAGE_EXTENSIONS):
                refs.setdefault(hit, []).append(ImageRef(hit[0], hit[1], name))
    for split, cls in sorted(classes - refs.keys()):  # a class would vanish, and the labels shift
        raise DataError(
            f"{path}: class '{cls}' of split '{split}' holds no image (images end in {' '.join(IMAGE_EXTENSIONS)})"
        )
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
    """PIL's decode of one image as RGB uint8 (y, x, channel), by its real range: 16-bit images
    are scaled (65535 -> 255, not saturated as PIL's RGB conversion does), palettes expanded;
    animated images, floating-point images and images over MAX_IMAGE_PIXELS are refused by name."""
    from PIL import Image

    try:
        with Image.open(BytesIO(blob)) as pil:
            if pil.width * pil.height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"image {name} is {pil.width} x {pil.height} pixels, over the {MAX_IMAGE_PIXELS:,} an image may have"
                )
            if getattr(pil, "n_frames", 1) > 1:
                raise DataError(f"image {name} is animated ({pil.n_frames} frames): give a still image")
            if pil.mode in ("F", "I;32", "I;32F") or pil.mode.startswith("F;"):
                raise DataError(f"image {name} has floating-point or 32-bit pixels (mode {pil.mode}): range unknown")
            if pil.mode == "I" or pil.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF)
                grey = np.asarray(pil, dtype=np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise DataError(f"image {name} has 32-bit pixels (mode {pil.mode}): range unknown")
                grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
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

    # spawn: no inherited threads (zarr's event loop, torch's pools) or locks; dnndist.data imports no torch
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
