"""Hostile inputs and faults, tried as a hostile user would: each must end in one line on stderr
and exit status 2 (no traceback), leave nothing half-written, and succeed once the input is fixed.

The corpus runs the stage CLI in-process on one tiny experiment (synthetic data, one run), one
test per case (named by the case). Inputs that are odd but legal (unicode and spaces in paths) must
simply work.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml

from dnndist import config as dcfg
from dnndist import models, preflight
from dnndist.settings import ModelSettings

from .conftest import cifar_binary_archive, cli_run, hold_results_lock, tiny_config, write_yaml

RUN = "base/kaiming_normal/seed0"


def cli_ok(*argv: str) -> None:
    rc, err = cli_run(*argv)
    assert rc == 0, err


@dataclass
class Case:
    name: str
    break_it: Callable[[], list[str]]  # makes the hostile input; returns the command that must fail
    expect: str  # a fragment of the one-line message
    fix: Callable[[], list[str]]  # mends the input; returns the command that must then succeed
    output: Path | None = None  # must not exist (nor a temporary sibling) after the failure


def _experiment(root: Path) -> dict:
    """The tiny experiment's config and paths under ``root`` (nothing built yet)."""
    cfg = tiny_config(root / "results", inits=["kaiming_normal"], train={"epochs": 1, "checkpoints": [0, 1]})
    return {
        "root": root,
        "cfg": cfg,
        "config": write_yaml(root / "config.yaml", cfg),
        "store": root / "results" / "data.zarr",
        "run": root / "results" / "run",
    }


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """One tiny experiment: config, dataset store, a trained run, its three extracted stores."""
    e = _experiment(tmp_path_factory.mktemp("hostile"))
    cfg, config = e["cfg"], e["config"]
    preflight.claim_results_dir(cfg["results"])  # what the workflow's onstart does
    cli_ok("data", "--config", config, "--out", e["store"])
    cli_ok("train", "--config", config, "--run", RUN, "--data", e["store"], "--out", e["run"], "--no-progress")
    for kind in ("weights", "features", "gradients"):
        cli_ok(
            "extract",
            kind,
            "--config",
            config,
            "--run",
            RUN,
            "--checkpoints",
            e["run"] / "checkpoints",
            "--data",
            e["store"],
            "--out",
            e["run"] / f"{kind}.zarr",
        )
    return e


def _flip_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    path.write_bytes(bytes(b))


def _first_chunk(store: Path, array: str) -> Path:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())[0]


def corpus(e: dict, tmp: Path) -> list[Case]:
    cases: list[Case] = []
    good_cfg = e["cfg"]

    # ---- configs, through `dnndist runs --config` (the same validation Snakemake runs) ----------
    def config_case(name: str, text: str, expect: str) -> None:
        path = tmp / f"config-{len(cases)}.yaml"

        def break_it() -> list[str]:
            path.write_text(text)
            return ["runs", "--config", path]

        def fix() -> list[str]:
            write_yaml(path, good_cfg)
            return ["runs", "--config", path]

        cases.append(Case(f"config: {name}", break_it, expect, fix))

    def patched(**over) -> str:
        return yaml.safe_dump(dcfg.deep_merge(good_cfg, over))

    config_case(
        "lr NaN", patched(train={"lr": 1.0}).replace("lr: 1.0", "lr: .nan"), "train.lr': nan is not a finite number"
    )
    config_case(
        "lr inf", patched(train={"lr": 1.0}).replace("lr: 1.0", "lr: .inf"), "train.lr': inf is not a finite number"
    )
    config_case(
        "NaN in a list", patched(stats={"near_zero": [0.5]}).replace("- 0.5", "- .nan"), "stats.near_zero[0]': nan"
    )
    config_case("negative lr", patched(train={"lr": -1.0}), "train.lr")
    config_case("string lr", patched(train={"lr": "fast"}), "train.lr")
    config_case("old gain auto", patched(init={"gain": "auto"}), "init.gain")
    config_case("empty inits", patched(inits=[]), "inits")
    config_case("duplicate inits", patched(inits=["ones", "ones"]), "inits")
    config_case("unknown init", patched(inits=["lecun"]), "inits[0]")
    config_case("unknown key", patched(bogus=1), "'bogus' was unexpected")
    config_case("seed 2^63", patched(seeds=[2**63]), "config key 'seeds[0]': 9223372036854775808 is greater than")
    config_case("duplicate yaml key", patched() + "seeds: [1]\nseeds: [2]\n", "'seeds': given twice")
    config_case("not yaml", "train: [unclosed\n", "not valid YAML")
    config_case("tab indentation", "results: r\ntrain:\n\tepochs: 2\n", "line 3, column 1")
    config_case("empty file", "", "is empty: an overlay needs at least one key")
    config_case("comments only", "# nothing yet\n", "is empty: an overlay needs at least one key")
    config_case("diverge_above 1", patched(train={"diverge_above": 1}), "train.diverge_above")
    config_case("seed -1", patched(seeds=[-1]), "seeds[0]")
    config_case("batch size 0", patched(train={"batch_size": 0}), "train.batch_size")
    config_case("unknown optimizer", patched(train={"optimizer": "lion"}), "train.optimizer")
    config_case("checkpoint named worst", patched(train={"checkpoints": [0, "worst"]}), "train.checkpoints")
    config_case("yaml list", "- 1\n- 2\n", "expected a mapping")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    config_case("yaml alias bomb", bomb + "seeds: *i\n", "expands to more than 100,000 values")
    config_case("results /", patched(results="/"), "the file-system root")
    config_case("results home", patched(results=str(Path.home())), "your home folder")
    foreign = tmp / "someone-elses-folder"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    config_case("results foreign folder", patched(results=str(foreign)), "did not create")
    a_file = tmp / "a-file"
    a_file.write_text("x")
    config_case("results is a file", patched(results=str(a_file)), "is not a folder")
    config_case("valid_size >= train", patched(data={"valid_size": 400}), "data.valid_size")

    missing = tmp / "missing.yaml"
    cases.append(
        Case(
            "config: missing file",
            lambda: ["runs", "--config", missing],
            "cannot read config file",
            lambda: (write_yaml(missing, good_cfg), ["runs", "--config", missing])[1],
        )
    )
    as_dir = tmp / "dir.yaml"
    cases.append(
        Case(
            "config: a directory",
            lambda: (as_dir.mkdir(), ["runs", "--config", as_dir])[1],
            "cannot read config file",
            lambda: (as_dir.rmdir(), write_yaml(as_dir, good_cfg), ["runs", "--config", as_dir])[2],
        )
    )
    binary = tmp / "binary.yaml"
    cases.append(
        Case(
            "config: binary file",
            lambda: (binary.write_bytes(b"\xff\xfe\x00\x81" * 10), ["runs", "--config", binary])[1],
            "not text",
            lambda: (write_yaml(binary, good_cfg), ["runs", "--config", binary])[1],
        )
    )

    # ---- stage CLI --settings --------------------------------------------------------------------
    run_settings = dcfg.run_settings(dcfg.validate(good_cfg, check_paths=False), dcfg.Run("base", "kaiming_normal", 0))
    data_settings = dcfg.data_settings(dcfg.validate(good_cfg, check_paths=False))
    out = tmp / "settings-out"

    def settings_case(name: str, argv: list[str], bad: str, good: str, expect: str, output: Path) -> None:
        cases.append(
            Case(
                f"--settings: {name}",
                lambda: [*argv[:1], "--settings", bad, *argv[1:]],
                expect,
                lambda: [*argv[:1], "--settings", good, *argv[1:]],
                output,
            )
        )

    partial = {k: v for k, v in data_settings.items() if k != "synthetic"}
    settings_case(
        "data, partial JSON",
        ["data", "--out", out / "d.zarr"],
        json.dumps(partial),
        json.dumps(data_settings),
        "'synthetic' is a required property",
        out / "d.zarr",
    )
    settings_case(
        "data, not JSON",
        ["data", "--out", out / "e.zarr"],
        "{source: synthetic",
        json.dumps(data_settings),
        "not valid JSON",
        out / "e.zarr",
    )
    no_model = {k: v for k, v in run_settings.items() if k != "model"}
    settings_case(
        "train, no model section",
        ["train", "--data", e["store"], "--out", out / "r1", "--no-progress"],
        json.dumps(no_model),
        json.dumps(run_settings),
        "'model' is a required property",
        out / "r1",
    )
    nan_lr = json.dumps(dcfg.deep_merge(run_settings, {"train": {"lr": float("nan")}}))
    settings_case(
        "train, NaN lr",
        ["train", "--data", e["store"], "--out", out / "r2", "--no-progress"],
        nan_lr,
        json.dumps(run_settings),
        "train.lr': nan is not a finite number",
        out / "r2",
    )
    no_lr = dcfg.deep_merge(run_settings, {})
    del no_lr["train"]["lr"]
    settings_case(
        "train, missing train.lr",
        ["train", "--data", e["store"], "--out", out / "r3", "--no-progress"],
        json.dumps(no_lr),
        json.dumps(run_settings),
        "'lr' is a required property",
        out / "r3",
    )
    settings_case(
        "train, diverge_above a string",
        ["train", "--data", e["store"], "--out", out / "r4", "--no-progress"],
        json.dumps(dcfg.deep_merge(run_settings, {"train": {"diverge_above": "1e9"}})),
        json.dumps(run_settings),
        "train.diverge_above",
        out / "r4",
    )
    settings_case(
        "train-stacked, not a list",
        ["train-stacked", "--data", e["store"], "--out", out / "s1", "--no-progress"],
        json.dumps(run_settings),
        json.dumps([run_settings]),
        "non-empty JSON list",
        out / "s1",
    )

    # ---- data sources ----------------------------------------------------------------------------
    def folder_case(name: str, make_bad: Callable[[Path], None], expect: str) -> None:
        tree, store = tmp / f"tree-{len(cases)}", tmp / f"folder-{len(cases)}.zarr"
        settings = {
            "source": "imagefolder",
            "imagefolder": {
                "path": str(tree),
                "train": "train",
                "test": "test",
                "image_size": 16,
                "resize": None,
                "limit_per_class": None,
                "normalize": "dataset",
            },
        }

        def break_it() -> list[str]:
            _jpeg_tree(tree)
            make_bad(tree)
            return ["data", "--settings", json.dumps(settings), "--out", store]

        def fix() -> list[str]:
            shutil.rmtree(tree)
            _jpeg_tree(tree)
            return ["data", "--settings", json.dumps(settings), "--out", store]

        cases.append(Case(f"data: {name}", break_it, expect, fix, store))

    folder_case("one class only", lambda t: [shutil.rmtree(t / s / "dog") for s in ("train", "test")], "single class")
    folder_case(
        "empty test split",
        lambda t: [f.unlink() for f in (t / "test").rglob("*.jpg")],
        "no images found for split 'test'",
    )
    folder_case(
        "corrupt JPEG",
        lambda t: (t / "train" / "cat" / "0001.jpg").write_bytes(b"\xff\xd8\xff garbage"),
        "cannot decode image",
    )
    folder_case("zero-byte JPEG", lambda t: (t / "train" / "cat" / "0001.jpg").write_bytes(b""), "cannot decode image")

    def animated_gif(t: Path) -> None:
        from PIL import Image

        frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
        frames[0].save(t / "train" / "cat" / "0003.gif", save_all=True, append_images=frames[1:])

    def huge_png(t: Path) -> None:  # 41 M pixels in a ~40 KB file: refused from its header
        from PIL import Image

        Image.new("L", (6400, 6400)).save(t / "train" / "cat" / "0003.png")

    def non_images_only(t: Path) -> None:
        (t / "train" / "bird").mkdir()
        (t / "train" / "bird" / "notes.txt").write_text("the bird pictures are elsewhere")

    folder_case("animated GIF", animated_gif, "is animated (2 frames): give a still image")
    folder_case("41 M pixel PNG", huge_png, "is 6400 x 6400 pixels, over the 40,000,000 an image may have")
    folder_case("a class holding no image", non_images_only, "class 'bird' of split 'train' holds no image")

    def float_tiff(t: Path) -> None:  # 32-bit float pixels: no range to scale by
        from PIL import Image

        Image.fromarray(np.full((20, 20), 0.5, dtype=np.float32)).save(t / "train" / "cat" / "0003.tif")

    folder_case("32-bit float TIFF", float_tiff, "0003.tif")
    folder_case(
        "a FIFO among the images", lambda t: os.mkfifo(t / "train" / "cat" / "0003.png"), "0003.png is not a regular"
    )
    folder_case(
        "a broken link among the images",
        lambda t: (t / "train" / "cat" / "0003.png").symlink_to(t / "gone.png"),
        "0003.png is not a regular file",
    )

    def archive_case(name: str, make_bad: Callable[[Path], None], expect: str) -> None:
        archive, store = tmp / f"cifar-{len(cases)}.tar.gz", tmp / f"cifar-{len(cases)}.zarr"
        settings = json.dumps({"source": "cifar10", "cifar10": {"url": "-", "md5": None}})

        def fix() -> list[str]:
            if archive.is_dir():
                archive.rmdir()
            cifar_binary_archive(archive)
            return ["data", "--settings", settings, "--archive", archive, "--out", store]

        cases.append(
            Case(
                f"archive: {name}",
                lambda: (make_bad(archive), ["data", "--settings", settings, "--archive", archive, "--out", store])[1],
                expect,
                fix,
                store,
            )
        )

    def truncated(p: Path) -> None:
        cifar_binary_archive(p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def member(name: str, symlink: bool = False) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            with tarfile.open(p, "w:gz") as tar:
                info = tarfile.TarInfo(name)
                if symlink:
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tar.addfile(info)
                else:
                    info.size = 3
                    tar.addfile(info, io.BytesIO(b"abc"))

        return make

    archive_case("truncated", truncated, "corrupt or truncated")
    archive_case("member with ..", member("../../evil.bin"), "unsafe archive member")
    archive_case("absolute member", member("/tmp/evil.bin"), "unsafe archive member")
    archive_case(
        "symlink member", member("cifar-10-batches-bin/data_batch_1.bin", symlink=True), "unsafe archive member"
    )

    def inner_symlink(p: Path) -> None:
        cifar_binary_archive(p)
        with tarfile.open(p, "r:gz") as tar:
            members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar]
        with tarfile.open(p, "w:gz") as tar:
            for m, blob in members:
                tar.addfile(m, io.BytesIO(blob) if blob is not None else None)
            link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_9.bin")
            link.type, link.linkname = tarfile.SYMTYPE, "data_batch_1.bin"
            tar.addfile(link)

    archive_case("symlink inside the tree", inner_symlink, "'cifar-10-batches-bin/data_batch_9.bin' is a symbolic link")
    archive_case("zero-byte archive", lambda p: p.write_bytes(b""), "corrupt or truncated")
    archive_case("directory instead of archive", lambda p: p.mkdir(), "")

    # ---- flipped bytes and missing pieces in what one stage hands the next -----------------------
    store, run = e["store"], e["run"]

    def train_argv(out: Path) -> list[str]:
        return ["train", "--config", e["config"], "--run", RUN, "--data", store, "--out", out, "--no-progress"]

    def rebuild_store() -> list[str]:
        shutil.rmtree(store)
        cli_ok("data", "--config", e["config"], "--out", store)
        return train_argv(tmp / "retrain")

    cases.append(
        Case(
            "dataset.zarr: flipped byte in an image chunk",
            lambda: (
                _flip_byte(_first_chunk(store, "train/images")),
                train_argv(tmp / "t1"),
            )[1],
            "array 'train/images' chunk (0, 0, 0, 0) is damaged",
            rebuild_store,
            tmp / "t1",
        )
    )
    cases.append(
        Case(
            "dataset.zarr: missing label chunk",
            lambda: (
                _first_chunk(store, "test/labels").unlink(),
                train_argv(tmp / "t2"),
            )[1],
            "array 'test/labels' chunk (0,) is missing",
            rebuild_store,
            tmp / "t2",
        )
    )
    cases.append(
        Case(
            "dataset.zarr: zarr.json deleted",
            lambda: (
                (store / "zarr.json").unlink(),
                train_argv(tmp / "t3"),
            )[1],
            "not a dataset store",
            rebuild_store,
            tmp / "t3",
        )
    )

    stats_argv = [
        "stats-run",
        "--settings",
        json.dumps({"stats": dcfg.validate(good_cfg, check_paths=False)["stats"]}),
        "--weights",
        run / "weights.zarr",
        "--features",
        run / "features.zarr",
        "--gradients",
        run / "gradients.zarr",
    ]

    def store_case(kind: str, array: str) -> None:
        out_dir = tmp / f"stats-{kind}"

        def break_it() -> list[str]:
            _flip_byte(_first_chunk(run / f"{kind}.zarr", array))
            return [*stats_argv, "--out-dir", out_dir]

        def fix() -> list[str]:
            shutil.rmtree(run / f"{kind}.zarr")
            cli_ok(
                "extract",
                kind,
                "--config",
                e["config"],
                "--run",
                RUN,
                "--checkpoints",
                run / "checkpoints",
                "--data",
                store,
                "--out",
                run / f"{kind}.zarr",
            )
            return [*stats_argv, "--out-dir", out_dir]

        cases.append(Case(f"{kind}.zarr: flipped byte", break_it, f"array '{array}' chunk", fix, out_dir))

    store_case("weights", "conv2/weight")
    store_case("features", "mu")
    store_case("gradients", "conv1/em")

    def retrain() -> None:
        shutil.rmtree(run)
        cli_ok("train", "--config", e["config"], "--run", RUN, "--data", store, "--out", run, "--no-progress")

    def ckpt_case(name: str, damage: Callable[[Path], None], expect: str) -> None:
        out_store = tmp / f"ckpt-{len(cases)}.zarr"
        argv = [
            "extract",
            "weights",
            "--config",
            e["config"],
            "--run",
            RUN,
            "--checkpoints",
            run / "checkpoints",
            "--data",
            store,
            "--out",
            out_store,
        ]
        cases.append(
            Case(
                f"checkpoint: {name}",
                lambda: (damage(run / "checkpoints"), argv)[1],
                expect,
                lambda: (retrain(), argv)[1],
                out_store,
            )
        )

    ckpt_case("flipped byte", lambda d: _flip_byte(d / "epoch_0001.safetensors"), "SHA-256 does not match")
    ckpt_case("zero-byte file", lambda d: (d / "epoch_0000.safetensors").write_bytes(b""), "SHA-256 does not match")
    ckpt_case("SHA256SUMS missing", lambda d: (d / "SHA256SUMS").unlink(), "no SHA256SUMS")
    ckpt_case("checkpoint missing", lambda d: (d / "epoch_0001.safetensors").unlink(), "missing checkpoint")

    # ---- given weights ------------------------------------------------------------------------------
    def weights_case(name: str, write_bad: Callable[[Path], None], expect: str, suffix: str = ".pth") -> None:
        path = tmp / f"given-{len(cases)}{suffix}"
        out_dir = tmp / f"given-run-{len(cases)}"
        cfg_path = tmp / f"given-{len(cases)}.yaml"
        argv = ["train", "--config", cfg_path, "--run", RUN, "--data", store, "--out", out_dir, "--no-progress"]

        def break_it() -> list[str]:
            write_bad(path)
            write_yaml(cfg_path, dcfg.deep_merge(good_cfg, {"model": {"weights": str(path)}}))
            return argv

        def fix() -> list[str]:
            if path.is_dir():
                path.rmdir()
            elif path.exists() or path.is_fifo():
                path.unlink()
            state = models.build(ModelSettings.from_dict(run_settings["model"])).state_dict()
            if suffix == ".safetensors":
                safetensors.torch.save_file(state, path)
            else:
                torch.save(state, path)
            return argv

        cases.append(Case(f"weights: {name}", break_it, expect, fix, out_dir))

    def nan_weights(p: Path) -> None:
        state = models.build(ModelSettings.from_dict(run_settings["model"])).state_dict()
        state["fc1.weight"][0, 0] = float("nan")
        torch.save(state, p)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    weights_case("NaN in a tensor", nan_weights, "NaN/inf")
    weights_case("malicious pickle", lambda p: torch.save({"conv1.weight": Evil()}, p), "not a readable state dict")
    weights_case("zero-byte file", lambda p: p.write_bytes(b""), "not a readable state dict")
    weights_case("a directory", lambda p: p.mkdir(), "is not a file")

    def retyped(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
        def write(p: Path) -> None:
            state = models.build(ModelSettings.from_dict(run_settings["model"])).state_dict()
            state["fc1.weight"] = change(state["fc1.weight"])
            torch.save(state, p)

        return write

    weights_case(
        "int64 tensor", retyped(lambda w: (w * 100).long()), "'fc1.weight' is torch.int64: weights must be real"
    )
    weights_case("bool tensor", retyped(lambda w: w > 0), "'fc1.weight' is torch.bool: weights must be real")
    weights_case("complex tensor", retyped(lambda w: w.to(torch.complex64)), "is torch.complex64: weights must be real")
    weights_case("sparse tensor", retyped(lambda w: w.to_sparse()), "'fc1.weight' is torch.sparse_coo, not dense")
    weights_case(
        "a whole pickled nn.Module",
        lambda p: torch.save(models.build(ModelSettings.from_dict(run_settings["model"])), p),
        "it pickles objects besides tensors, e.g. a whole nn.Module",
    )
    weights_case(
        "torch file named .safetensors",
        lambda p: torch.save(models.build(ModelSettings.from_dict(run_settings["model"])).state_dict(), p),
        "a torch zip file named .safetensors: name it .pt",
        suffix=".safetensors",
    )
    weights_case("a FIFO", lambda p: os.mkfifo(p), "is not a file")
    weights_case("a link to a device", lambda p: p.symlink_to("/dev/zero"), "is not a file")
    weights_case("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a readable")

    def missing_tensor(p: Path) -> None:
        state = models.build(ModelSettings.from_dict(run_settings["model"])).state_dict()
        del state["conv2.bias"]
        torch.save(state, p)

    weights_case("a tensor missing", missing_tensor, "conv2.bias")
    weights_case(
        "head smaller than the classes",
        lambda p: torch.save(
            models.build(ModelSettings.from_dict(run_settings["model"]), num_classes=5).state_dict(), p
        ),
        "10 classes but the model's head has 5 outputs",
    )

    # ---- a results folder another workflow writes ---------------------------------------------------
    held = tmp / "held-results"
    holder: list = []
    held_argv = train_argv(held / "run")

    def release() -> list[str]:
        for proc in holder:
            proc.kill()
            proc.wait()
        return held_argv

    cases.append(
        Case(
            "results: a stage command into a folder another workflow holds",
            lambda: (holder.append(hold_results_lock(held)), held_argv)[1],
            "is being written by a workflow (pid",
            release,
            held / "run",
        )
    )

    # ---- odd but legal: 16-bit images, another spelling of the results folder --------------------------
    deep = tmp / "tree-16bit"

    def sixteen_bit() -> list[str]:
        from PIL import Image

        _jpeg_tree(deep)
        grey = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 160).astype(np.uint16)
        Image.fromarray(grey).save(deep / "train" / "cat" / "0003.png")
        folder = {"path": str(deep), "train": "train", "test": "test", "image_size": 16, "resize": None}
        folder |= {"limit_per_class": None, "normalize": "dataset"}
        return ["data", "--settings", json.dumps({"source": "imagefolder", "imagefolder": folder})]

    cases.append(Case("16-bit PNG (legal)", lambda: [], "", lambda: [*sixteen_bit(), "--out", tmp / "sixteen.zarr"]))
    slashed = tmp / "slashed.yaml"
    cases.append(
        Case(
            "results with a trailing slash (legal)",
            lambda: [],
            "",
            lambda: (
                write_yaml(slashed, {**good_cfg, "results": good_cfg["results"] + "/"}),
                ["runs", "--config", slashed],
            )[1],
        )
    )

    # ---- odd but legal: unicode and spaces in paths ---------------------------------------------------
    odd = tmp / "résultats ünïcode" / "a run"
    cases.append(
        Case(
            "unicode and spaces in paths (legal)",
            lambda: [],
            "",
            lambda: ["train", "--config", e["config"], "--run", RUN, "--data", store, "--out", odd, "--no-progress"],
        )
    )
    return cases


def _jpeg_tree(root: Path, classes=("cat", "dog"), n=3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:04d}.jpg"
                )


def _half_written(output: Path | None) -> list[str]:
    if output is None:
        return []
    left = [output] if output.exists() else []
    left += list(output.parent.glob(f".{output.name}.tmp-*")) if output.parent.exists() else []
    return [str(p) for p in left]


def _case_names() -> list[str]:
    """The corpus's case names, for parametrisation (building a corpus only writes small files)."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "t").mkdir()
        return [c.name for c in corpus(_experiment(Path(d)), Path(d) / "t")]


CASES = _case_names()


def test_the_corpus_is_large_and_its_cases_are_named_apart():
    assert len(CASES) >= 80 and len(set(CASES)) == len(CASES)


# the cases share the module's experiment, each breaking and then mending it, in this order
@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_hostile_input(exp, tmp_path, name):
    """The broken input ends in one line on stderr naming the problem, exit status 2, no
    traceback and nothing half-written; once mended, the same command succeeds."""
    (case,) = [c for c in corpus(exp, tmp_path) if c.name == name]
    argv = case.break_it()
    problems = []
    if argv:
        rc, err = cli_run(*argv)
        lines = err.strip().splitlines()
        if rc != 2 or len(lines) != 1 or "Traceback" in err or case.expect not in err:
            problems.append(f"exit {rc}, stderr {err.strip()[:400]!r}")
        elif _half_written(case.output):
            problems.append(f"left {_half_written(case.output)}")
    try:  # mend it even after a failure, so that one bad case does not spoil the next
        rc, err = cli_run(*case.fix())
    except AssertionError as exc:
        rc, err = -1, str(exc)
    if rc != 0:
        problems.append(f"the rerun after the fix failed (exit {rc}): {err.strip()[:400]!r}")
    assert problems == [], "\n".join(problems)


@pytest.mark.slow
def test_snakemakes_marker_in_a_store_raises_no_warning(tmp_path):
    """Snakemake's `.snakemake_timestamp` in a directory output is not damage: with dnndist's
    filter (installed on import), verifying and reading such a store warns about nothing."""
    import subprocess
    import sys
    import warnings

    import numpy as np
    import xarray as xr

    import dnndist
    from dnndist import integrity

    store = tmp_path / "s.zarr"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(store, zarr_format=3, consolidated=False)
    (store / ".snakemake_timestamp").touch()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # without the filter: zarr warns
        integrity.verify_store(store)
    assert any(".snakemake_timestamp" in str(w.message) for w in seen)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dnndist.ignore_snakemake_marker()
        integrity.verify_store(store)
        assert xr.open_zarr(store, consolidated=False)["a"].values.tolist() == [0.0, 1.0, 2.0]
    assert [str(w.message) for w in seen] == []
    # a job's process: importing dnndist is enough, even where user warnings are errors
    code = (
        "import sys, xarray as xr; from dnndist import integrity; integrity.verify_store(sys.argv[1]); "
        "xr.open_zarr(sys.argv[1], consolidated=False).load()"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code, str(store)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("slab_bytes", [64 << 20, 3 * 8 * 10])
def test_verify_store_names_a_damaged_later_chunk(tmp_path, monkeypatch, slab_bytes):
    """verify_store reads many chunks at once (slabs of about VERIFY_BYTES); a damaged chunk in
    the middle of a slab is still named alone, whether the array is read in one slab or in several."""
    import numpy as np
    import zarr

    from dnndist import integrity

    monkeypatch.setattr(integrity, "VERIFY_BYTES", slab_bytes)
    store = tmp_path / "s.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    arr = root.create_array("g/a", shape=(12, 10), chunks=(2, 5), dtype="float64", **integrity.checksummed())
    arr[...] = np.arange(120.0).reshape(12, 10)
    root.create_array("s", shape=(), dtype="int64", **integrity.checksummed())[...] = 7
    integrity.verify_store(store)  # intact
    assert len(integrity._slabs(arr)) == (1 if slab_bytes > 960 else 6)
    _flip_byte(store / "g" / "a" / "c" / "3" / "1")
    with pytest.raises(integrity.IntegrityError, match=r"array 'g/a' chunk \(3, 1\) is damaged"):
        integrity.verify_store(store)


def test_verify_store_reads_other_codecs_through_zarr_and_checks_strings(tmp_path, monkeypatch):
    """Arrays dnndist did not write (gzip here, whose CRC catches a flipped byte) are read through
    zarr in slabs, and a damaged chunk is still named; a damaged chunk of strings (vlen-utf8 +
    checksummed zstd, as the stores' coordinates) is named by the direct check."""
    import numpy as np
    import zarr
    from zarr.codecs import GzipCodec

    from dnndist import integrity

    monkeypatch.setattr(integrity, "VERIFY_BYTES", 2 * 8 * 10)  # 2 rows of chunks a slab: several slabs
    store = tmp_path / "g.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    arr = root.create_array("a", shape=(8, 10), chunks=(2, 10), dtype="float64", compressors=[GzipCodec()])
    arr[...] = np.arange(80.0).reshape(8, 10)
    names = root.create_array("names", shape=(4,), chunks=(2,), dtype=str, **integrity.checksummed())
    names[...] = np.array(["conv1", "conv2", "conv3", "fc1"])
    assert integrity._zstd_chunk_check(arr) is None and integrity._zstd_chunk_check(names) is not None
    integrity.verify_store(store)  # intact
    _flip_byte(store / "a" / "c" / "2" / "0")
    with pytest.raises(integrity.IntegrityError, match=r"array 'a' chunk \(2, 0\) is damaged"):
        integrity.verify_store(store)
    arr[...] = np.arange(80.0).reshape(8, 10)  # mended
    integrity.verify_store(store)
    _flip_byte(store / "names" / "c" / "1")
    with pytest.raises(integrity.IntegrityError, match=r"array 'names' chunk \(1,\) is damaged"):
        integrity.verify_store(store)
