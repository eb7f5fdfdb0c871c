"""Data stage: synthetic demo data, CIFAR-10 download (local HTTP server), image folders, splits."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch
import zarr

from dnndist import data
from dnndist.settings import DataSettings

from .conftest import cifar_binary_archive, env


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_synthetic_is_deterministic_balanced_and_seed_dependent():
    a_img, a_lab = data.synthetic(200, 32, seed=3)
    b_img, b_lab = data.synthetic(200, 32, seed=3)
    c_img, _ = data.synthetic(200, 32, seed=4)
    assert a_img.shape == (200, 3, 32, 32) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert np.bincount(a_lab, minlength=10).tolist() == [20] * 10
    assert a_img.std() > 30  # not blank


def test_synthetic_store_has_canonical_layout(tmp_path):
    settings = {"source": "synthetic", "synthetic": {"train_size": 300, "test_size": 50, "image_size": 32, "seed": 0}}
    out = data.build_store(DataSettings.from_dict(settings), tmp_path / "d.zarr")
    root = zarr.open_group(str(out), mode="r")
    assert root["train"]["images"].shape == (300, 3, 32, 32)
    assert root["test"]["labels"].shape == (50,)
    assert root["train"]["images"].metadata.dimension_names == ("sample", "channel", "y", "x")
    attrs = dict(root.attrs)
    assert len(attrs["classes"]) == 10 and len(attrs["mean"]) == 3
    assert {"config_hash", "git_commit", "torch_version", "zarr_version"} <= set(attrs)
    ds = data.open_store(out)
    x = ds.images["train"].double() / 255
    assert torch.allclose(x.mean((0, 2, 3)), ds.mean.double(), atol=1e-6)
    assert torch.allclose(x.std((0, 2, 3), correction=0), ds.std.double(), atol=1e-6)
    # the store opens lazily with xarray, named dims
    import xarray as xr

    xds = xr.open_zarr(out, group="train", consolidated=False)
    assert xds["images"].dims == ("sample", "channel", "y", "x")
    with warnings.catch_warnings():  # consolidated: a notebook's plain open_zarr does not warn
        warnings.simplefilter("error")
        assert xr.open_zarr(out, group="test")["labels"].shape == (50,)


@pytest.mark.slow
def test_cifar10_download_from_local_server_and_convert(tmp_path, http_root):
    www, url = http_root
    images, labels = cifar_binary_archive(www / "cifar-10-binary.tar.gz")
    archive = tmp_path / "dl" / "cifar-10-binary.tar.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnndist",
            "download-cifar10",
            "--url",
            f"{url}/cifar-10-binary.tar.gz",
            "--md5",
            md5(www / "cifar-10-binary.tar.gz"),
            "--out",
            str(archive),
        ],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert archive.read_bytes() == (www / "cifar-10-binary.tar.gz").read_bytes()
    settings = {"source": "cifar10", "cifar10": {"url": url, "md5": md5(archive)}}
    ds = data.open_store(data.build_store(DataSettings.from_dict(settings), tmp_path / "c.zarr", archive=archive))
    assert torch.equal(ds.images["train"], torch.from_numpy(images))
    assert torch.equal(ds.labels["train"], torch.from_numpy(labels))
    assert ds.images["test"].shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane"


def test_download_with_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, http_root):
    www, url = http_root
    cifar_binary_archive(www / "a.tar.gz")
    out = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises(data.DataError, match="checksum"):
        data.download_cifar10(f"{url}/a.tar.gz", "0" * 32, out)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_download_unreachable_server_is_a_clear_error(tmp_path):
    """Offline, the error says where the archive goes and names the local-copy preset."""
    with pytest.raises(data.DataError, match="failed") as info:
        data.download_cifar10("http://127.0.0.1:9/none.tar.gz", None, tmp_path / "x.tar.gz")
    assert str(tmp_path / "x.tar.gz") in str(info.value) and "presets/cifar10-jpeg.yaml" in str(info.value)


def test_corrupt_or_truncated_archive_gives_clear_error_and_no_store(tmp_path):
    good = tmp_path / "good.tar.gz"
    cifar_binary_archive(good)
    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    settings = {"source": "cifar10", "cifar10": {"url": "-", "md5": None}}
    with pytest.raises(data.DataError, match="corrupt or truncated"):
        data.build_store(DataSettings.from_dict(settings), tmp_path / "s.zarr", archive=truncated)
    assert not (tmp_path / "s.zarr").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.zarr")] == []
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.build_store(
            DataSettings.from_dict({**settings, "cifar10": {"url": "-", "md5": "0" * 32}}),
            tmp_path / "s.zarr",
            archive=good,
        )
    # through the CLI: one line, exit status 2, no traceback
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnndist",
            "data",
            "--settings",
            '{"source": "cifar10", "cifar10": {"url": "-", "md5": null}}',
            "--archive",
            str(truncated),
            "--out",
            str(tmp_path / "s.zarr"),
        ],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "corrupt or truncated" in proc.stderr


def test_wrong_record_size_is_rejected(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            blob = b"\x01" * 3000
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(data.DataError, match="3073-byte record"):
        data.read_cifar10_archive(bad, None)


@pytest.mark.parametrize("member", ["../evil.jpg", "/abs/evil.jpg", "link"])
def test_unsafe_archive_members_are_refused(tmp_path, member):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        if member == "link":
            info = tarfile.TarInfo("train/cat/link.jpg")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo(member)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(data.DataError, match="unsafe archive member"):
        list(data.iter_tar(bad))


def _jpeg_tree(root, classes=("cat", "dog"), n=3, size=(40, 48)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i:04d}.jpg", quality=90)


def test_imagefolder_directory_resized_and_cropped(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    settings = {
        "source": "imagefolder",
        "imagefolder": {
            "path": str(tmp_path / "tree"),
            "train": "train",
            "test": "test",
            "image_size": 24,
            "resize": 32,
            "limit_per_class": 2,
        },
    }
    ds = data.open_store(data.build_store(DataSettings.from_dict(settings), tmp_path / "f.zarr"))
    assert ds.images["train"].shape == (4, 3, 24, 24) and ds.images["test"].shape == (4, 3, 24, 24)
    assert ds.classes == ["cat", "dog"] and ds.labels["train"].tolist() == [0, 0, 1, 1]


def test_imagefolder_bad_image_is_a_clear_error(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "0001.jpg").write_bytes(b"not a jpeg")
    settings = {
        "source": "imagefolder",
        "imagefolder": {
            "path": str(tmp_path / "tree"),
            "train": "train",
            "test": None,
            "image_size": 32,
            "resize": None,
            "limit_per_class": None,
        },
    }
    with pytest.raises(data.DataError, match="cannot decode image train/cat/0001.jpg"):
        data.build_store(DataSettings.from_dict(settings), tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def _mixed_image_tree(root, n=4):
    """train/test x cat/dog images of the kinds decode handles differently at image_size 32:
    RGB JPEGs that fit (32x32), one that needs a resize and a crop (40x48), a greyscale JPEG
    and an RGBA PNG that need a crop."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:04d}.jpg", quality=80
                )
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / split / c / "big.jpg")
            Image.fromarray(rng.integers(0, 256, (36, 32), dtype=np.uint8), "L").save(root / split / c / "grey.jpg")
            Image.fromarray(rng.integers(0, 256, (32, 34, 4), dtype=np.uint8), "RGBA").save(
                root / split / c / "rgba.png"
            )


def _tar_gz(tree, archive):
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(tree.rglob("*"), reverse=True):  # not in sorted order: the store's order comes from the names
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(tree)))
    return archive


@pytest.mark.slow
def test_parallel_decode_equals_serial(tmp_path, monkeypatch):
    """Directory and .tar.gz (all images: listed and decoded in one pass; limit_per_class:
    listed first), 1 and 2 worker processes (batches of 2 images, so the pool really runs):
    the bytes of decoding each image in turn with decode_image, whatever the worker count."""
    import concurrent.futures

    tree = tmp_path / "tree"
    _mixed_image_tree(tree)
    archive = _tar_gz(tree, tmp_path / "tree.tar.gz")
    pools = []

    class CountingPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(data.sources, "DECODE_BATCH", 2)
    subdirs = {"train": "train", "test": "test"}
    first_attrs = {}
    # limit 3: the fitting 0000..0002.jpg only, so that only one pool pays for importing torch to resize
    for source, workers, limit in ((tree, 1, 3), (tree, 2, 3), (archive, 2, 3), (archive, 1, None), (archive, 2, None)):
        settings = {
            "source": "imagefolder",
            "imagefolder": {
                "path": str(source),
                "train": "train",
                "test": "test",
                "image_size": 32,
                "resize": None,
                "limit_per_class": limit,
            },
        }
        out = data.build_store(
            DataSettings.from_dict(settings), tmp_path / f"{source.name}-{workers}-{limit}.zarr", workers=workers
        )
        root = zarr.open_group(str(out), mode="r")
        refs = data.list_imagefolder(tree, subdirs, limit)
        assert len(refs) == 4 * (limit or 7)
        for s in subdirs:
            expected = [
                data.decode_image((tree / r.name).read_bytes(), r.name, 32, 32).numpy() for r in refs if r.split == s
            ]
            assert np.array_equal(root[s]["images"][:], np.stack(expected))
            assert root[s]["labels"][:].tolist() == [int(r.cls == "dog") for r in refs if r.split == s]
        attrs = {k: v for k, v in root.attrs.items() if k != "config_hash"}  # the hash covers the path
        assert attrs == first_attrs.setdefault(limit, attrs)
    assert pools == [2, 2, 2]  # every 2-worker build decoded in worker processes; 1 worker: in this process


def test_parallel_decode_reports_the_first_bad_image(tmp_path, monkeypatch):
    """The first bad image in reading order (names for a directory, members for an archive)
    is the one reported, in the same one-line DataError as a serial decode gives."""
    tree = tmp_path / "tree"
    _jpeg_tree(tree, n=6, size=(32, 32))
    (tree / "train" / "cat" / "0001.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tree / "train" / "dog" / "0002.jpg").write_bytes(b"")
    monkeypatch.setattr(data.sources, "DECODE_BATCH", 2)
    archive = _tar_gz(tree, tmp_path / "tree.tar.gz")  # reverse order: the dog's bad image comes first
    for source, first in ((tree, "train/cat/0001.jpg"), (archive, "train/dog/0002.jpg")):
        settings = {
            "source": "imagefolder",
            "imagefolder": {
                "path": str(source),
                "train": "train",
                "test": "test",
                "image_size": 32,
                "resize": None,
                "limit_per_class": None,
            },
        }
        for workers in (1, 2):
            with pytest.raises(data.DataError, match=f"^cannot decode image {first}: "):
                data.build_store(DataSettings.from_dict(settings), tmp_path / "bad.zarr", workers=workers)
            assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.slow
def test_imagefolder_from_shared_cifar_jpeg_slice(tmp_path, shared_jpeg):
    settings = {
        "source": "imagefolder",
        "imagefolder": {
            "path": str(shared_jpeg),
            "train": "train",
            "test": "test",
            "image_size": 32,
            "resize": None,
            "limit_per_class": 5,
        },
    }
    ds = data.open_store(data.build_store(DataSettings.from_dict(settings), tmp_path / "j.zarr"))
    assert ds.images["train"].shape == (50, 3, 32, 32) and ds.images["test"].shape == (50, 3, 32, 32)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(ds.labels["train"].numpy()).tolist() == [5] * 10
    # real photos: per-channel means near the README's (0.485, 0.477, 0.439), loosely on 50 images
    assert torch.all((ds.mean > 0.3) & (ds.mean < 0.65)) and torch.all((ds.std > 0.15) & (ds.std < 0.35))


def test_split_indices_are_seeded_disjoint_and_complete():
    tr, va = data.split_indices(100, 20, seed=1)
    tr2, va2 = data.split_indices(100, 20, seed=1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 20 and len(tr) == 80 and set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))
    assert not torch.equal(va, data.split_indices(100, 20, seed=2)[1])
    with pytest.raises(data.DataError, match="valid_size"):
        data.split_indices(10, 10, 0)


def test_paper_split_trains_on_every_image_and_validates_on_test():
    images = {
        "train": torch.arange(40, dtype=torch.uint8).view(10, 1, 2, 2),
        "test": torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
    }
    labels = {"train": torch.arange(10) % 2, "test": torch.tensor([0, 1, 0, 1])}
    ds = data.Dataset(images, labels, ["a", "b"], torch.zeros(1), torch.ones(1))
    held = data.make_splits(ds, valid_size=3, split_seed=0, valid_split="train")
    assert len(held.labels["train"]) == 7 and len(held.labels["valid"]) == 3
    paper = data.make_splits(ds, valid_size=3, split_seed=0, valid_split="test")
    assert torch.equal(paper.images["train"], images["train"])  # all 10 train images, in order
    assert paper.images["valid"] is paper.images["test"] and torch.equal(paper.labels["valid"], labels["test"])
    moved = paper.to(torch.device("cpu"))
    assert moved.images["valid"] is moved.images["test"]  # evaluated once (train.eval_rows)
    with pytest.raises(data.DataError, match="no test split"):
        data.make_splits(
            data.Dataset({"train": images["train"]}, {"train": labels["train"]}, ["a", "b"], ds.mean, ds.std),
            3,
            0,
            "test",
        )


def test_random_split_is_seeded_gaussian():
    a = data.random_inputs(500, (3, 8, 8), seed=5)
    assert torch.equal(a, data.random_inputs(500, (3, 8, 8), seed=5))
    assert abs(a.mean().item()) < 0.02 and abs(a.std().item() - 1) < 0.02


def test_prepare_normalises_and_binarizes():
    batch = torch.tensor([[[[0, 255]], [[51, 102]], [[128, 10]]]], dtype=torch.uint8)  # (1, 3, 1, 2)
    mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.5, 1.0])
    x = data.prepare(batch, mean, std)
    assert torch.allclose(x[0, :, 0, 0], (torch.tensor([0, 51, 128]) / 255 - 0.5) / std)
    b = data.prepare(batch, mean, std, "binarize", 0.3)
    assert b[0, :, 0, :].tolist() == [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="not a dataset store"):
        data.open_store(tmp_path / "nothing.zarr")


def test_random_split_ranges_are_consistent():
    whole = data.random_inputs(700, (3, 4, 4), seed=2)
    assert torch.equal(data.random_inputs(300, (3, 4, 4), seed=2, start=250), whole[250:550])
    assert not torch.equal(whole, data.random_inputs(700, (3, 4, 4), seed=3))


def test_read_only_results_directory_is_a_clear_error(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores permission bits; use a path under a regular file instead
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        out = blocker / "dataset.zarr"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "dataset.zarr"
    settings = '{"source": "synthetic", "synthetic": {"train_size": 20, "test_size": 10, "image_size": 16, "seed": 0}}'
    proc = subprocess.run(
        [sys.executable, "-m", "dnndist", "data", "--settings", settings, "--out", str(out)],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error:" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_missing_input_file_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnndist",
            "download-cifar10",
            "--url",
            "file:///nonexistent/x.tar.gz",
            "--out",
            str(tmp_path / "x.tar.gz"),
        ],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_leaves_no_store(tmp_path):
    """A full disk, simulated with a file-size limit (writes fail with EFBIG, as with ENOSPC):
    one-line error, exit 2, no store at the output path; a later run writes a complete one."""
    import resource

    out = tmp_path / "dataset.zarr"
    settings = (
        '{"source": "synthetic", "synthetic": {"train_size": 600, "test_size": 100, "image_size": 32, "seed": 0}}'
    )
    cmd = [sys.executable, "-m", "dnndist", "data", "--settings", settings, "--out", str(out)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".dataset.zarr.tmp-*"))
    subprocess.run(cmd, env=env(), check=True, capture_output=True)
    import zarr

    assert zarr.open_group(str(out), mode="r")["train"]["images"].shape == (600, 3, 32, 32)


def test_random_split_blocks_are_drawn_once_and_equal_their_seeded_generators(monkeypatch):
    """Each block of the 'random' split comes from its own generator (seed * 1_000_003 + block),
    whether a previous batch drew it or not, and is drawn once for a split's batches in order;
    the blocks kept for the next batch are not changed by what a caller does with its inputs."""
    from dnndist.data import read

    monkeypatch.setattr(read, "RANDOM_BLOCK", 16)
    monkeypatch.setattr(read, "_random_last", {})
    shape = (3, 4, 4)

    def reference(n, start, seed):
        blocks = [
            torch.randn((16, *shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + b))
            for b in range(start // 16, (start + n - 1) // 16 + 1)
        ]
        return torch.cat(blocks)[start % 16 : start % 16 + n]

    drawn = []
    real = read._random_block
    monkeypatch.setattr(read, "_random_block", lambda *k: drawn.append(k[2]) or real(*k))
    for start, n in [(0, 20), (20, 20), (40, 50), (90, 10)]:  # batches of a split, in order
        x = read.random_inputs(n, shape, seed=7, start=start)
        assert torch.equal(x, reference(n, start, 7)), start
        x.mul_(0)  # the caller's own tensor
    assert drawn == list(range(100 // 16 + 1))  # every block once
    assert torch.equal(read.random_inputs(5, shape, seed=7, start=90), reference(5, 90, 7))
    assert read.random_inputs(0, shape, seed=7).shape == (0, *shape)


# --------------------------------------------------------------------------- decoded by their real range
def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_and_palette_images_decode_by_their_real_range():
    """A 16-bit grey PNG maps 0..65535 onto 0..255 (PIL's RGB conversion saturated it to white:
    a store mean of 0.998); a palette image expands to its colours; a still GIF decodes."""
    from PIL import Image

    from dnndist.data.sources import decode_array

    grey = np.array([[0, 257], [65535, 32896]], dtype=np.uint16)
    png16 = _png_bytes(Image.fromarray(grey))
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")  # PIL opens it as 16-bit
    out = decode_array(png16, "g.png", 2, 2)  # (channel, y, x)
    expected = np.round(grey.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert out.shape == (3, 2, 2) and (out == expected[None]).all() and expected.tolist() == [[0, 1], [255, 128]]
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    for fmt in ("PNG", "GIF"):
        buf = io.BytesIO()
        pal.save(buf, format=fmt)
        got = decode_array(buf.getvalue(), f"p.{fmt.lower()}", 4, 4)
        assert (got == np.asarray(pal.convert("RGB")).transpose(2, 0, 1)).all(), fmt


def test_a_hard_link_in_an_image_archive_reads_as_its_target(tmp_path):
    """tarfile's data filter keeps a hard link that stays inside the tree: it is an image like
    the file it links to (it was skipped silently: 6 train images instead of 7)."""
    _jpeg_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "tree", arcname="tree")
        link = tarfile.TarInfo("tree/train/cat/linked.jpg")
        link.type, link.linkname = tarfile.LNKTYPE, "tree/train/cat/0000.jpg"
        tar.addfile(link)
    refs = data.list_imagefolder(archive, {"train": "tree/train", "test": "tree/test"}, None)
    assert sum(r.split == "train" for r in refs) == 7
    images = dict((r.name, img) for r, img in data.iter_imagefolder(archive, refs, 20, 20, workers=1))
    assert (images["tree/train/cat/linked.jpg"] == images["tree/train/cat/0000.jpg"]).all()


def test_an_archive_member_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from dnndist.data import sources

    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 1000)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        big = tarfile.TarInfo("tree/train/cat/big.jpg")
        big.size = 5000
        tar.addfile(big, io.BytesIO(bytes(5000)))
        link = tarfile.TarInfo("tree/train/cat/link.jpg")  # a link's own size is 0: bounded by its read
        link.type, link.linkname = tarfile.LNKTYPE, "tree/train/cat/big.jpg"
        tar.addfile(link)
    with pytest.raises(data.DataError, match=r"member 'tree/train/cat/big.jpg' is over the 1,000 bytes"):
        list(sources.iter_tar(archive))
    with pytest.raises(data.DataError, match=r"member 'tree/train/cat/link.jpg' is over the 1,000 bytes"):
        list(sources.iter_tar(archive, wanted={"tree/train/cat/link.jpg"}))
