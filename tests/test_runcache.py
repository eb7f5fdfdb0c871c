"""The training cache of stacked runs (dnndist.runcache): keys, completeness, restoring."""

from __future__ import annotations

import json
import os

import pytest

from dnndist import DnndistError, runcache
from dnndist import config as dcfg
from dnndist.integrity import SUMS, checksums_text

from .conftest import cli_run, tiny_config


def _entry(path, content=b"weights"):
    """A complete entry as the training writes it: checkpoints with SHA256SUMS, metrics, summary last."""
    ckpts = path / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "epoch_0000.safetensors").write_bytes(content)
    (ckpts / "epoch_0001.safetensors").write_bytes(content + b"1")
    (ckpts / ".snakemake_timestamp").write_bytes(b"")  # Snakemake's marker: not restored
    (ckpts / SUMS).write_text(checksums_text(sorted(ckpts.glob("epoch_*"))))
    (path / "metrics.csv").write_text("epoch,value\n0,1.0\n")
    (path / "summary.json").write_text(json.dumps({"status": "completed"}))
    return path


def test_the_key_follows_a_runs_own_settings_the_code_and_given_weights(tmp_path):
    cfg = dcfg.validate(tiny_config(tmp_path / "r"), check_paths=False)
    a, b = (dcfg.run_settings(cfg, dcfg.Run("base", i, 0)) for i in ("kaiming_normal", "xavier_uniform"))
    key = runcache.run_key(a, "code1")
    assert key == runcache.run_key(json.loads(json.dumps(a)), "code1")  # the content, not the object
    assert len({key, runcache.run_key(b, "code1"), runcache.run_key(a, "code2")}) == 3
    lr = json.loads(json.dumps(a))
    lr["train"]["lr"] = 5.0e-4
    assert runcache.run_key(lr, "code1") != key
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    given = json.loads(json.dumps(a))
    given["model"]["weights"] = str(weights)
    first = runcache.run_key(given, "code1")
    weights.write_bytes(b"two")  # the same path, other weights: another key
    assert runcache.run_key(given, "code1") != first


def test_restore_links_the_entry_and_refuses_a_damaged_or_unfinished_one(tmp_path, monkeypatch):
    entry = _entry(tmp_path / "cache" / "k1")
    assert runcache.is_complete(entry)
    run = tmp_path / "runs" / "r"
    runcache.restore(entry, run)
    names = ["epoch_0000.safetensors", "epoch_0001.safetensors", SUMS]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(names)
    for rel in [f"checkpoints/{n}" for n in names] + ["metrics.csv", "summary.json"]:
        assert (run / rel).read_bytes() == (entry / rel).read_bytes()
        assert os.path.samefile(run / rel, entry / rel)  # a hard link: no second copy
    # where links fail (another file system), copies; a restore replaces what was there
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError("cross-device link")))
    other = _entry(tmp_path / "cache" / "k2", b"other")
    runcache.restore(other, run)
    assert (run / "checkpoints" / "epoch_0000.safetensors").read_bytes() == b"other"
    assert not os.path.samefile(run / "metrics.csv", other / "metrics.csv")
    # a checkpoint changed after training: refused, naming the entry to delete
    (other / "checkpoints" / "epoch_0001.safetensors").write_bytes(b"tampered")
    with pytest.raises(DnndistError, match=r"training cache entry damaged: .*epoch_0001.*delete .*k2"):
        runcache.restore(other, tmp_path / "runs" / "s")
    assert not (tmp_path / "runs" / "s").exists()
    # an entry of a killed job (no summary yet) is not complete, and not restored
    (entry / "summary.json").unlink()
    assert not runcache.is_complete(entry)
    rc, err = cli_run("restore", entry, "--out", tmp_path / "runs" / "t")
    assert rc == 2 and "not a complete training cache entry" in err and "Traceback" not in err
