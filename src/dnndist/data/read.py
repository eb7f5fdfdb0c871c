"""The read side of the dataset store: its splits as tensors, the seeded train/valid split, the
'random' split of Gaussian inputs, and uint8 batches prepared as model input on the device."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnndist import integrity
from dnndist.data.sources import DataError

if TYPE_CHECKING:  # torch is imported where it is used (the package imports without it)
    import torch


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
_random_last: dict[tuple[int, tuple[int, ...], int], torch.Tensor] = {}  # the last block drawn, by its key
_random_lock = threading.Lock()


def _random_block(seed: int, shape: tuple[int, ...], block: int) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + block)
    return torch.randn((RANDOM_BLOCK, *shape), generator=g)


def random_inputs(n: int, shape: tuple[int, int, int], seed: int, start: int = 0) -> torch.Tensor:
    """Inputs ``start .. start+n`` of the 'random' split: standard Gaussian images in the model's
    (normalised) input space. Generated in seeded blocks of RANDOM_BLOCK inputs (block ``b``
    from its own generator, seeded ``seed * 1_000_003 + b``), so any range can be made on demand
    and the split never has to be held in memory whole. The last block drawn is kept for the
    next call: a batch that ends inside a block does not make the next batch draw it again (a
    third of the draws for batches of 500)."""
    import torch

    if n <= 0:
        return torch.empty((0, *shape))
    shape = tuple(shape)
    keys = [(seed, shape, b) for b in range(start // RANDOM_BLOCK, (start + n - 1) // RANDOM_BLOCK + 1)]
    with _random_lock:
        have = {k: _random_last[k] for k in keys if k in _random_last}
    have.update((k, _random_block(*k)) for k in keys if k not in have)
    with _random_lock:
        _random_last.clear()
        _random_last[keys[-1]] = have[keys[-1]]
    offset = start - keys[0][2] * RANDOM_BLOCK
    return torch.cat([have[k] for k in keys])[offset : offset + n]  # a new tensor: the kept block stays as drawn


def prepare(
    batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, transform: str = "as_is", threshold: float = 0.2
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 model input, on the batch's device."""
    x = batch.float().div_(255.0)
    if transform == "binarize":
        return (x > threshold).float()
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
