"""Integrity of what one stage writes and the next one reads (torch-free).

- Every zarr array dnndist writes is compressed with zstd *with its frame checksum* (a
  hash of each chunk's content), and every chunk is written, even one that equals the fill
  value. ``verify_store`` reads every chunk of every array once, so a flipped byte, a
  truncated or missing chunk fails with one line naming the store, the array and the chunk
  instead of reaching a statistic as a wrong number.
- Checkpoint directories carry ``SHA256SUMS`` (``sha256sum`` format), written with the
  checkpoints and checked by every reader (``verify_checksums``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path
from typing import Any

from dnndist import DnndistError

SUMS = "SHA256SUMS"


class IntegrityError(DnndistError):
    """Stored data does not match what was written: a damaged chunk or file."""


def checksummed() -> dict[str, Any]:
    """zarr array options: zstd with its content checksum, every chunk written.
    ``compressors`` go into an array's encoding; ``write_empty_chunks`` into its config."""
    from zarr.codecs import ZstdCodec

    return {"compressors": [ZstdCodec(level=0, checksum=True)]}


def verify_store(path: str | Path) -> None:
    """Read every chunk of every array of a zarr v3 store; IntegrityError names the first damaged one."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise IntegrityError(f"{path} is not a complete zarr store (no zarr.json); rerun the stage that writes it")
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3)
        arrays = _all_arrays(root)
    except Exception as exc:  # noqa: BLE001 - unreadable metadata is damage too
        raise IntegrityError(
            f"{path}: unreadable store metadata ({type(exc).__name__}: {exc}); rerun the stage that writes it"
        ) from None
    for name, arr in arrays:
        grid = [range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]
        for block in itertools.product(*grid):
            key = "/".join(["c", *map(str, block)]) if block else "c"
            if not (path / name / key).is_file():
                raise IntegrityError(
                    f"{path}: array {name!r} chunk {block} is missing; delete the store and rerun the stage that writes it"
                )
            try:
                arr.blocks[block] if block else arr[...]
            except Exception as exc:  # noqa: BLE001 - the codec's own error says how it failed
                raise IntegrityError(
                    f"{path}: array {name!r} chunk {block} is damaged ({exc}); "
                    "delete the store and rerun the stage that writes it"
                ) from None


def _all_arrays(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = [(f"{prefix}{name}", arr) for name, arr in group.arrays()]
    for name, sub in group.groups():
        out += _all_arrays(sub, f"{prefix}{name}/")
    return out


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums_text(files: list[Path]) -> str:
    """``sha256sum`` lines for files of one directory (by name, sorted)."""
    return "".join(f"{sha256(f)}  {f.name}\n" for f in sorted(files, key=lambda p: p.name))


def verify_checksums(directory: str | Path, names: list[str]) -> None:
    """Check files of ``directory`` against its SHA256SUMS; IntegrityError names the first bad one."""
    directory = Path(directory)
    sums_path = directory / SUMS
    try:
        lines = sums_path.read_text().splitlines()
    except FileNotFoundError:
        raise IntegrityError(
            f"{directory}: no {SUMS} (checkpoints written by an older dnndist or not by the training stage); "
            "rerun the training stage"
        ) from None
    expected = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        expected[name] = digest
    for name in names:
        if name not in expected:
            raise IntegrityError(f"{directory / name}: not listed in {SUMS}; rerun the training stage")
        if sha256(directory / name) != expected[name]:
            raise IntegrityError(
                f"{directory / name}: SHA-256 does not match {SUMS} (the file changed after training wrote it); "
                "rerun the training stage"
            )


def consolidate(path: str | Path) -> None:
    """Write the store's consolidated metadata (before anything else, e.g. Snakemake's
    ``.snakemake_timestamp``, lands in it): readers open it in one read and without warnings.
    zarr warns that consolidated metadata is not part of the v3 specification; it is an
    addition readers may ignore, so that warning is silenced here."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))
