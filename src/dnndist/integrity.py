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
from collections.abc import Callable
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
    from numcodecs import Zstd

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
    zstd = Zstd()
    for name, arr in arrays:
        check = _zstd_chunk_check(arr)
        for block in itertools.product(*_chunk_grid(arr)):
            key = "/".join(["c", *map(str, block)]) if block else "c"
            if not (path / name / key).is_file():
                raise IntegrityError(
                    f"{path}: array {name!r} chunk {block} is missing; delete the store and rerun the stage that writes it"
                )
            if check is not None:
                try:
                    wrong = check(zstd.decode((path / name / key).read_bytes()))  # zstd checks its content checksum
                except Exception as exc:  # noqa: BLE001 - the codec's own error says how it failed
                    raise _damaged(path, name, block, str(exc)) from None
                if wrong is not None:
                    raise _damaged(path, name, block, f"it decodes to other than {wrong} bytes or values")
        if check is not None:
            continue
        for rows in _slabs(arr):  # other codecs through zarr, many chunks per read, bounded memory
            try:
                arr[rows] if arr.ndim else arr[...]
            except Exception:  # noqa: BLE001 - find the chunk and report the codec's own error below
                _verify_chunks(path, name, arr, rows)


def _zstd_chunk_check(arr: Any) -> Callable[[bytes], int | None] | None:
    """How one chunk of the array is checked without zarr, where its codecs end with zstd with its
    content checksum (what dnndist writes): the decoded size a chunk of fixed-size values must
    have (bytes codec), or the item count of a chunk of strings (vlen-utf8); None otherwise (then
    zarr reads the array)."""
    from zarr.codecs import BytesCodec, VLenUTF8Codec, ZstdCodec

    codecs = tuple(arr.metadata.codecs)
    if len(codecs) != 2 or not isinstance(codecs[1], ZstdCodec) or not codecs[1].checksum:
        return None
    items = math.prod(arr.chunks)
    dtype = getattr(arr, "dtype", None)
    if isinstance(codecs[0], BytesCodec) and getattr(dtype, "kind", "") in "biufc" and getattr(dtype, "itemsize", 0):
        size = items * int(dtype.itemsize)
        return lambda raw: None if len(raw) == size else size
    if isinstance(codecs[0], VLenUTF8Codec):
        from numcodecs import VLenUTF8

        strings = VLenUTF8()
        return lambda raw: None if len(strings.decode(raw)) == items else items
    return None


def _chunk_grid(arr: Any) -> list[range]:
    """The chunk indices of the array along each dimension."""
    return [range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]


def _damaged(path: Path, name: str, block: tuple[int, ...], why: str) -> IntegrityError:
    return IntegrityError(
        f"{path}: array {name!r} chunk {block} is damaged ({why}); delete the store and rerun the stage that writes it"
    )


VERIFY_BYTES = 64 << 20  # verify_store reads at most about this many bytes at once


def _slabs(arr: Any) -> list[slice]:
    """Slices along the first axis, whole chunks each, of about VERIFY_BYTES decoded (one for a scalar)."""
    if not arr.ndim:
        return [slice(None)]
    row_chunk = arr.chunks[0]
    chunk_rows_bytes = max(1, arr.nbytes // max(1, arr.shape[0]) * row_chunk)
    step = row_chunk * max(1, VERIFY_BYTES // chunk_rows_bytes)
    return [slice(i, min(i + step, arr.shape[0])) for i in range(0, arr.shape[0], step)] or [slice(0, 0)]


def _verify_chunks(path: Path, name: str, arr: Any, rows: slice) -> None:
    """Read the chunks of ``rows`` one by one; IntegrityError names the first that fails."""
    grid = _chunk_grid(arr)
    if grid:
        first = rows.start // arr.chunks[0]
        grid[0] = range(first, math.ceil(rows.stop / arr.chunks[0]))
    for block in itertools.product(*grid):
        try:
            arr.blocks[block] if block else arr[...]
        except Exception as exc:  # noqa: BLE001 - the codec's own error says how it failed
            raise _damaged(path, name, block, str(exc)) from None
    where = f"rows {rows.start}:{rows.stop}" if arr.ndim else "its value"
    raise IntegrityError(  # the slab failed but no chunk alone does: report the slab
        f"{path}: array {name!r} {where} cannot be read; delete the store and rerun the stage that writes it"
    )


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
