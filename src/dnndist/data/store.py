"""The canonical dataset store: one uint8 zarr v3 group per split, written from a source.

The store (``dataset.zarr``) has one group per split (``train``, ``test``) holding
``images`` (sample, channel, y, x) uint8 and ``labels`` (sample,) int64, plus the class
names and the per-channel mean/std of the train split as attributes. It is written to
a temporary path and renamed, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dnndist import dims, integrity
from dnndist.data.sources import (
    CIFAR10_CLASSES,
    DataError,
    ImageRef,
    _read_archive,
    _select_refs,
    _split_of,
    default_workers,
    iter_imagefolder,
    list_imagefolder,
    read_cifar10_archive,
    synthetic,
)
from dnndist.io import atomic_path
from dnndist.provenance import attrs as provenance_attrs
from dnndist.settings import DataSettings

log = logging.getLogger("dnndist.data")  # the data stage's logger (its name in the logs since before the split)
CHUNK = 2048  # images per zarr chunk (6 MB at 32x32x3)


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
        integrity.consolidate(tmp)  # xr.open_zarr(store, group="train") without a warning
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
