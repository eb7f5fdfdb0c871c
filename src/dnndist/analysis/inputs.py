"""The inputs of ``analyze``: an image folder or archive (one split or several), a tensor, or a DataLoader, as batches."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnndist import DnndistError, data
from dnndist.analysis.model import INPUT_SPLIT, NORMALIZE, log


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class _Split:
    name: str
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]  # (model input, labels or None)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar", ".tar.gz", ".tgz"))


def _image_splits(
    path: Path,
    image_size: int,
    resize: int | None,
    normalize: str,
    per_class: int | None,
    batch_size: int,
    workers: int | None,
) -> list[_Split]:
    """An image folder or archive, ``<class>/<image>`` (one split, 'inputs') or
    ``<split>/<class>/<image>`` (one split per sub-folder): listed, decoded (resized and centre-cropped)
    and normalised as the data stage does (``data.iter_imagefolder``, ``data.prepare``)."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    elif _is_archive(path):
        names = [name for name, _ in data.iter_tar(path, wanted=set())]
    elif path.exists():
        raise DnndistError(f"inputs {path}: expected an image folder or a .tar/.tar.gz of one")
    else:
        raise DnndistError(f"inputs {path} does not exist")
    images = [n for n in names if n.lower().endswith(data.IMAGE_EXTENSIONS)]
    depth = Counter(n.count("/") for n in images)
    if depth.get(1):
        subdirs = {INPUT_SPLIT: ""}
    elif depth.get(2):
        subdirs = {s: s for s in sorted({n.split("/")[0] for n in images if n.count("/") == 2})}
    else:
        raise DnndistError(
            f"inputs {path}: no images in image-folder layout (<class>/<image> or <split>/<class>/<image>)"
        )
    refs = data.sources._select_refs(path, names, subdirs, per_class)
    classes = sorted({r.cls for r in refs})
    index = {c: i for i, c in enumerate(classes)}
    decoded: dict[str, list[np.ndarray]] = {s: [] for s in subdirs}
    for ref, img in data.iter_imagefolder(path, refs, image_size, resize or image_size, workers):
        decoded[ref.split].append(img)
    arrays = {s: torch.from_numpy(np.stack(v)) for s, v in decoded.items()}
    labels = {s: torch.tensor([index[r.cls] for r in refs if r.split == s], dtype=torch.int64) for s in subdirs}
    if normalize == "imagenet":
        mean, std = torch.tensor(data.IMAGENET_MEAN), torch.tensor(data.IMAGENET_STD)
    elif normalize == "none":
        mean, std = torch.zeros(3), torch.ones(3)
    else:  # the data stage's statistics (StoreWriter), over the train split if there is one, else all images
        pool = [arrays["train"]] if "train" in arrays else list(arrays.values())
        mean, std = _channel_mean_std(pool)
    log.info(
        "inputs: %s (%s; %d classes)", path, ", ".join(f"{s}: {len(v)} images" for s, v in arrays.items()), len(classes)
    )

    def batches(split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(arrays[split]), batch_size):
            sl = slice(start, start + batch_size)
            yield data.prepare(arrays[split][sl], mean.float(), std.float()), labels[split][sl]

    return [_Split(s, batches(s)) for s in subdirs]


def _channel_mean_std(pool: list[torch.Tensor], chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of uint8 images (N, C, H, W) scaled to [0, 1], as the data
    stage computes them, accumulated in float64 over chunks of images (a float64 copy of 10,000
    images at 224 x 224 is 12 GB)."""
    total, sq, count = 0.0, 0.0, 0
    for a in pool:
        for start in range(0, len(a), chunk):
            x = a[start : start + chunk].numpy().astype(np.float64) / 255.0
            total = total + x.sum(axis=(0, 2, 3))
            sq = sq + (x**2).sum(axis=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    m = total / count
    return torch.tensor(m), torch.tensor(np.sqrt(np.maximum(sq / count - m**2, 0.0)))


def _batch_of(item: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) of one DataLoader item: a tensor, or a tuple/list (x, y, ...)."""
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(item[0])
        y = torch.as_tensor(item[1]) if len(item) > 1 and isinstance(item[1], (torch.Tensor, np.ndarray)) else None
        return x, (y if y is not None and y.ndim == 1 and len(y) == len(x) and not y.is_floating_point() else None)
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(item), None
    raise DnndistError(f"inputs: a batch must be a tensor or a tuple (x, y, ...), got a {type(item).__name__}")


def input_splits(
    inputs: Any,
    *,
    batch_size: int = 256,
    image_size: int = 32,
    resize: int | None = None,
    normalize: str = "dataset",
    per_class: int | None = None,
    workers: int | None = None,
) -> list[_Split]:
    """The splits of ``inputs``: an image folder or archive (path), a tensor / array of model inputs
    (cut into batches), or an iterable of batches (a DataLoader yielding x or (x, y, ...))."""
    if normalize not in NORMALIZE:
        raise DnndistError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if isinstance(inputs, (str, Path)):
        return _image_splits(Path(inputs), image_size, resize, normalize, per_class, batch_size, workers)
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(inputs)
        if x.ndim < 2 or len(x) == 0:
            raise DnndistError(f"inputs: expected a batch of model inputs (N, ...), got shape {tuple(x.shape)}")
        return [_Split(INPUT_SPLIT, ((b, None) for b in x.split(batch_size)))]
    if isinstance(inputs, Iterable) and not isinstance(inputs, (Mapping, bytes)):
        return [_Split(INPUT_SPLIT, (_batch_of(item) for item in inputs))]
    raise DnndistError(f"inputs: expected an image folder, a tensor or a DataLoader, got a {type(inputs).__name__}")
