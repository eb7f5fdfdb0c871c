"""Data stage: sources -> one canonical uint8 zarr store; splits; batches on the device.

A package by direction: ``sources`` reads what comes in (the CIFAR-10 binary archive, an image
folder or archive, synthetic images; the download and its checks), ``store`` writes the canonical
store (``build_store``), ``read`` is the read side (``open_store``, the splits, the 'random' split,
``prepare``). The public names of all three are re-exported here, so ``from dnndist import data;
data.build_store(...)`` works as it did when this was one module. Tuning knobs (``DECODE_BATCH``,
``DECODE_BYTES``, ``CHUNK``, ``RANDOM_BLOCK``) are not re-exported: set them on the submodule
that reads them (``data.sources.DECODE_BATCH``), where a change takes effect.
Torch-free at import: image-decoding worker processes start without it.
"""

from __future__ import annotations

from dnndist.data import read, sources, store
from dnndist.data.read import (
    Dataset,
    StoreInfo,
    make_splits,
    open_store,
    prepare,
    random_inputs,
    split_indices,
    store_info,
)
from dnndist.data.sources import (
    CIFAR10_CLASSES,
    CIFAR10_RECORD,
    CIFAR10_TEST_FILES,
    CIFAR10_TRAIN_FILES,
    IMAGE_EXTENSIONS,
    DataError,
    ImageRef,
    decode_array,
    decode_image,
    default_workers,
    download_cifar10,
    iter_imagefolder,
    iter_tar,
    list_imagefolder,
    md5sum,
    read_cifar10_archive,
    synthetic,
)
from dnndist.data.store import IMAGENET_MEAN, IMAGENET_STD, StoreWriter, build_store

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_RECORD",
    "CIFAR10_TEST_FILES",
    "CIFAR10_TRAIN_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "DataError",
    "Dataset",
    "ImageRef",
    "StoreInfo",
    "StoreWriter",
    "build_store",
    "decode_array",
    "decode_image",
    "default_workers",
    "download_cifar10",
    "iter_imagefolder",
    "iter_tar",
    "list_imagefolder",
    "make_splits",
    "md5sum",
    "open_store",
    "prepare",
    "random_inputs",
    "read",
    "read_cifar10_archive",
    "sources",
    "split_indices",
    "store",
    "store_info",
    "synthetic",
]
