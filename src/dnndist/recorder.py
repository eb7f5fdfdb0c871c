"""Record any PyTorch training loop: the workflow's stores of a run, written while it trains.

    rec = dnndist.Recorder(model, "runs/myexp/adam-seed0", group="adam", seed=0, inputs=probe_loader)
    for epoch in range(epochs):
        for x, y in train_loader:
            ...; loss.backward(); opt.step()
            rec.step(loss=loss)                      # the running train loss (and a step cadence)
        rec.epoch(test_accuracy=acc, test_loss=tl)   # metrics; records at an epoch cadence
    rec.close()                                      # or: with dnndist.Recorder(...) as rec:

At each record point (the start, then every epoch or every ``every`` steps) the model is measured
by ``dnndist.analyze``, as the workflow measures a checkpoint: its weights, the features of the
probe inputs (exact streaming moments and histograms, per split) and, for conv layers, the
emission and absorption of the first ``gradient_inputs`` probe inputs. The probe inputs are taken
once, when the recorder starts (the first ``max_inputs`` of ``inputs``), so every record point
sees the same inputs. Each record point is written at once, atomically, as one file holding its
three stores (``records/<epoch>.safetensors``, its SHA-256 in the manifest): a crash loses at most
the record point in progress. ``close`` combines them
into the run's ``weights.zarr``, ``features.zarr`` and ``gradients.zarr`` (checksummed, as the
workflow's), the layout ``dnndist report`` reads; ``metrics.csv`` holds the loss and the metrics
given to ``epoch`` in the workflow's long format, and ``dnndist-record.json`` the run's provenance
(model class, optimiser, group, seed, cadence, the user's git state, the time recording took).

The stores label a run with the workflow's run coordinates: variant ``recorded``, init = the
run's ``group``, seed = ``seed``; ``epoch`` is the record point (the epoch, or the step with a
step cadence; 0: before training). Runs with the same group are seeds of one condition.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from dnndist import DnndistError, dims, integrity
from dnndist.io import KINDS, write_bytes, write_json, write_text
from dnndist.provenance import config_hash, package_versions
from dnndist.recorded import RECORD_FILE, VARIANT, read_info

log = logging.getLogger("dnndist.recorder")

RECORDS = "records"  # one file per record point while recording
SPLITS = ("train", "valid", "test")  # metric name prefixes read as the split (test_accuracy: split test)
METRIC_COLUMNS = (
    dims.VARIANT,
    dims.INIT,
    dims.SEED,
    dims.EPOCH,
    "step",
    dims.SPLIT,
    "metric",
    "value",
)  # the workflow's
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Recorder:
    """Records a training run (see the module docstring). ``model``: the ``nn.Module`` being trained
    (a classifier: emission and absorption need (batch, classes) logits; ``emission=False``
    otherwise). ``out``: the run's folder (new or empty). ``inputs``: probe inputs (a DataLoader of x
    or (x, y), a tensor, an (x, y) pair, or an image folder as ``dnndist.analyze`` takes it); without
    them, weights only. ``every``: "epoch", or a number of steps. ``init``: the init the weights are
    compared with (``init_std``; default torch_default). ``optimizer`` (optional) is recorded by its
    class and hyper-parameters. Other keyword options go to ``dnndist.analyze`` (e.g.
    ``histogram_bins``, ``sample_size``, ``gradient_batch_size``, ``device``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        out: str | Path,
        *,
        group: str = "run",
        seed: int = 0,
        inputs: Any = None,
        every: str | int = "epoch",
        init: str | None = None,
        max_inputs: int = 512,
        gradient_inputs: int = 64,
        emission: bool = True,
        optimizer: torch.optim.Optimizer | None = None,
        start: bool = True,
        **options: Any,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise DnndistError(f"Recorder needs the torch.nn.Module being trained, got a {type(model).__name__}")
        if not (isinstance(group, str) and _NAME.match(group)):
            raise DnndistError(f"group must be a name of letters, digits and _.+- (it names the run), got {group!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DnndistError(f"seed must be a non-negative integer, got {seed!r}")
        if not (every == "epoch" or (isinstance(every, int) and not isinstance(every, bool) and every > 0)):
            raise DnndistError(f"every must be 'epoch' or a positive number of steps, got {every!r}")
        self.model, self.out, self.group, self.seed, self.every = model, Path(out), group, int(seed), every
        self._claim_folder()
        self.options = {"init": init, "emission": emission and inputs is not None, **options, "tables": False}
        self.options["gradient_inputs"] = gradient_inputs
        self.probe = _probe(inputs, max_inputs, options.get("batch_size", 256)) if inputs is not None else None
        self.steps = self.epochs = 0
        self.losses: list[float | torch.Tensor] = []
        self.metrics: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.closed = False
        self.info = _provenance(model, optimizer, group, self.seed, every, self.probe, self.options)
        self._write_info("recording")
        if start:
            self.record()  # before training: epoch (or step) 0

    # ------------------------------------------------------------------ the user's loop
    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """One optimiser step done; ``loss`` (its training loss) goes into the epoch's mean train loss.
        With ``every=N``, records after every N-th step."""
        self._open()
        self.steps += 1
        if loss is not None:  # a tensor stays on its device: no host sync per step (read once an epoch)
            self.losses.append(loss.detach() if isinstance(loss, torch.Tensor) else float(loss))
        if isinstance(self.every, int) and self.steps % self.every == 0:
            self.record()

    def epoch(self, **metrics: float | torch.Tensor) -> None:
        """One epoch done: its metrics (``test_accuracy=0.61``: split test, metric accuracy; a name
        without a train/valid/test prefix is a train metric) and, from the losses given to ``step``,
        its mean train loss. With ``every="epoch"``, records."""
        self._open()
        self.epochs += 1
        at = self._at()
        rows = []
        if self.losses and "train_loss" not in metrics and "loss" not in metrics:
            rows.append(self._metric(at, "train", "loss", _mean_loss(self.losses)))
        self.losses = []
        for name, value in metrics.items():
            split, metric = _split_metric(name)
            rows.append(self._metric(at, split, metric, float(value.detach() if torch.is_tensor(value) else value)))
        self.metrics.extend(rows)
        self._write_metrics()
        if self.every == "epoch":
            self.record()

    def record(self) -> None:
        """Measure the model now (``dnndist.analyze``) and write this record point's stores."""
        from dnndist.analysis import analyze

        self._open()
        at = self._at()
        if any(r["epoch"] == at for r in self.records):
            return  # this point is recorded already (an explicit record() at a scheduled point)
        t0 = time.perf_counter()
        result = analyze(self.model, self.probe, **self.options)
        stores = {
            kind: _relabel(root, groups, self.group, self.seed, at)
            for kind, root, groups in (
                ("weights", result.weights, result.weight_groups),
                ("features", result.features, result.feature_groups),
                ("gradients", result.gradients, result.gradient_groups),
            )
            if root is not None
        }
        path = self.out / RECORDS / f"{at:08d}.safetensors"
        write_bytes(path, record_bytes(stores))
        took = time.perf_counter() - t0
        self.records.append(
            {
                "epoch": at,
                "step": self.steps,
                "epochs_done": self.epochs,
                "seconds": round(took, 3),
                "file": path.name,
                "sha256": integrity.sha256(path),
            }
        )
        self._write_info("recording")
        log.info("recorded %s seed %d at %s %d in %.2f s", self.group, self.seed, self._unit(), at, took)

    def close(self, status: str = "closed") -> None:
        """Combine the record points into the run's stores (``finish_run``) and mark the run done."""
        if self.closed:
            return
        self.closed = True
        if self.records:
            finish_run(self.out)
        self._write_info(status)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("closed" if exc_type is None else f"failed: {exc_type.__name__}")  # what was recorded is kept

    # ------------------------------------------------------------------ internals
    def _unit(self) -> str:
        return "epoch" if self.every == "epoch" else "step"

    def _at(self) -> int:
        return self.epochs if self.every == "epoch" else self.steps

    def _open(self) -> None:
        if self.closed:
            raise DnndistError(f"the recorder of {self.out} is closed")

    def _claim_folder(self) -> None:
        if (self.out / RECORD_FILE).exists():
            raise DnndistError(f"{self.out} holds a recorded run already; record into a new folder (or delete it)")
        if self.out.exists() and any(self.out.iterdir()):
            raise DnndistError(f"{self.out} is not empty; record into a new folder")
        self.out.mkdir(parents=True, exist_ok=True)

    def _metric(self, at: int, split: str, metric: str, value: float) -> dict[str, Any]:
        return {
            dims.VARIANT: VARIANT,
            dims.INIT: self.group,
            dims.SEED: self.seed,
            dims.EPOCH: at,
            "step": np.nan,
            dims.SPLIT: split,
            "metric": metric,
            "value": value,
        }

    def _write_metrics(self) -> None:
        write_text(self.out / "metrics.csv", pd.DataFrame(self.metrics, columns=METRIC_COLUMNS).to_csv(index=False))

    def _write_info(self, status: str) -> None:
        overhead = sum(r["seconds"] for r in self.records)
        write_json(
            self.out / RECORD_FILE,
            {**self.info, "status": status, "records": self.records, "record_seconds": round(overhead, 3)},
        )


# --------------------------------------------------------------------------- pieces
def _mean_loss(losses: list[float | torch.Tensor]) -> float:
    """The mean of the steps' losses: tensors averaged where they are (one host sync), floats as they are."""
    tensors = [v.double().mean() for v in losses if isinstance(v, torch.Tensor)]
    total = float(torch.stack(tensors).sum()) if tensors else 0.0
    return (total + sum(v for v in losses if not isinstance(v, torch.Tensor))) / len(losses)


def _split_metric(name: str) -> tuple[str, str]:
    """``test_accuracy`` -> (test, accuracy); ``val_loss`` -> (valid, loss); ``lr`` -> (train, lr)."""
    head, _, rest = name.partition("_")
    head = "valid" if head == "val" else head
    return (head, rest) if head in SPLITS and rest else ("train", name)


def _probe(inputs: Any, max_inputs: int, batch_size: int) -> Any:
    """The probe inputs, taken once: the first ``max_inputs`` of a DataLoader / tensor / (x, y)
    pair as a list of batches of ``batch_size`` ((x, y), or x without labels) on the CPU, the same
    inputs at every record point; an image folder or archive is passed on as it is (``analyze``
    decodes it, in a fixed order)."""
    if isinstance(inputs, (str, Path)):
        return inputs
    if isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 1:
        raise DnndistError(f"max_inputs must be a positive integer, got {max_inputs!r}")
    if isinstance(inputs, tuple) and len(inputs) == 2 and all(torch.is_tensor(t) for t in inputs):
        batches: Iterable[Any] = [inputs]
    elif torch.is_tensor(inputs) or isinstance(inputs, np.ndarray):
        batches = [torch.as_tensor(inputs)]
    else:
        batches = inputs
    from dnndist.analysis import input_splits

    xs, ys, seen = [], [], 0
    for x, y in input_splits(batches)[0].batches:
        take = min(len(x), max_inputs - seen)
        xs.append(x[:take].detach().cpu())
        ys.append(y[:take].detach().cpu() if y is not None else None)
        seen += take
        if seen >= max_inputs:
            break
    if not seen:
        raise DnndistError("inputs: no probe inputs (an empty DataLoader or tensor)")
    x = torch.cat(xs)
    if all(v is not None for v in ys):
        return list(zip(x.split(batch_size), torch.cat(ys).split(batch_size), strict=True))
    return list(x.split(batch_size))


def _relabel(
    root: xr.Dataset, groups: Mapping[str, xr.Dataset], group: str, seed: int, at: int
) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """A store's datasets with the recorded run's coordinates: variant ``recorded``, init = group, the
    seed, the record point as the epoch."""
    values = {dims.VARIANT: VARIANT, dims.INIT: group, dims.SEED: seed, dims.EPOCH: at}

    def one(ds: xr.Dataset) -> xr.Dataset:
        new = {d: ds[d].copy(data=np.array([v], dtype=ds[d].dtype)) for d, v in values.items() if d in ds.dims}
        return ds.assign_coords(new)

    attrs = {
        dims.VARIANT: VARIANT,
        dims.INIT: group,
        dims.SEED: str(seed),
        "reference_init": root.attrs.get("reference_init", root.attrs.get("init")),
    }
    return one(root).assign_attrs(attrs), {name: one(ds) for name, ds in groups.items()}


def _write(path: Path, root: xr.Dataset, groups: Mapping[str, xr.Dataset]) -> None:
    from dnndist.extract import write_store

    write_store(path, root, groups, {"recorded_with": "dnndist.Recorder"})


# A record point is one safetensors file (one write: the three stores' arrays by
# "<kind>/<group>/<variable>", the xarray structure and the strings as JSON metadata; no pickle).
# Writing them as zarr stores at every record point would cost ~10 ms per array (~300 arrays for a
# ResNet); the run's zarr stores are written once, by finish_run.
def record_bytes(stores: Mapping[str, tuple[xr.Dataset, Mapping[str, xr.Dataset]]]) -> bytes:
    """The three stores of one record point as one safetensors file (``read_record`` inverts it)."""
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {}
    structure: dict[str, Any] = {}
    for kind, (root, groups) in stores.items():
        for group, ds in {"": root, **groups}.items():
            entries = []
            for name, var in ds.variables.items():
                key = f"{kind}/{group}/{name}"
                value = var.values
                entry = {"name": name, "dims": list(var.dims), "attrs": _plain(var.attrs), "coord": name in ds.coords}
                if value.dtype.kind in "OU":
                    entry["strings"] = [str(v) for v in value.ravel()]
                    entry["shape"] = list(value.shape)
                else:
                    arrays[key] = np.ascontiguousarray(value)
                entries.append(entry)
            structure[f"{kind}/{group}"] = {"variables": entries, "attrs": _plain(ds.attrs)}
    return save(arrays, metadata={"dnndist-record": json.dumps(structure, sort_keys=True)})


def read_record(path: Path) -> dict[str, tuple[xr.Dataset, dict[str, xr.Dataset]]]:
    """The stores of one record point (``record_bytes``): kind -> (root, {group: dataset})."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            structure = json.loads((fh.metadata() or {})["dnndist-record"])
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise DnndistError(f"{path}: not a readable record point ({type(exc).__name__}: {exc})") from None
    out: dict[str, tuple[xr.Dataset, dict[str, xr.Dataset]]] = {}
    for where, spec in structure.items():
        kind, group = where.split("/", 1)
        data_vars, coords = {}, {}
        for e in spec["variables"]:
            if "strings" in e:
                value = np.array(e["strings"], dtype=object).reshape(e["shape"])
            else:
                value = arrays[f"{kind}/{group}/{e['name']}"]
            (coords if e["coord"] else data_vars)[e["name"]] = (tuple(e["dims"]), value, e["attrs"])
        ds = xr.Dataset(data_vars, coords=coords, attrs=spec["attrs"])
        root, groups = out.get(kind, (None, {}))
        if group:
            groups[group] = ds
        else:
            root = ds
        out[kind] = (root, groups)
    return out


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as JSON values (numpy scalars and arrays as Python ones)."""
    return json.loads(json.dumps(dict(attrs), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def finish_run(out: str | Path) -> list[Path]:
    """Combine a recorded run's record points (``records/*.safetensors``, each checked against the
    SHA-256 its manifest holds) into its stores (``<kind>.zarr``, along epoch), then remove them.
    Run by ``close``, or by ``dnndist report`` for a run whose loop ended without it."""
    out = Path(out)
    files = sorted((out / RECORDS).glob("*.safetensors"))
    if not files:
        return [out / f"{k}.zarr" for k in KINDS if (out / f"{k}.zarr").exists()]
    sums = {r["file"]: r["sha256"] for r in read_info(out).get("records", []) if "file" in r}
    for f in files:
        if f.name in sums and integrity.sha256(f) != sums[f.name]:
            raise integrity.IntegrityError(f"{f}: damaged (its SHA-256 is not the one recorded); delete it and rerun")
    records = [read_record(f) for f in files]
    written = []
    for kind in KINDS:
        parts = [r[kind] for r in records if kind in r]
        if not parts:
            continue
        root = _concat([p[0] for p in parts])
        groups = {g: _concat([p[1][g] for p in parts]) for g in parts[0][1]}
        _write(out / f"{kind}.zarr", root.assign_attrs(record_points=len(parts)), groups)
        integrity.verify_store(out / f"{kind}.zarr")
        written.append(out / f"{kind}.zarr")
    shutil.rmtree(out / RECORDS)
    return written


def _concat(parts: list[xr.Dataset]) -> xr.Dataset:
    """Record points along epoch; what has no epoch dimension (sample indices, the layer table) once."""
    if dims.EPOCH not in parts[0].dims:
        return parts[0]
    return xr.concat(parts, dim=dims.EPOCH, data_vars="minimal", coords="minimal", compat="override", join="exact")


def _git_state() -> dict[str, str]:
    """The git commit of the working directory (the user's code) and whether it has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return {"commit": "not a git repository"}
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": str(bool(dirty.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown"}


def _optimizer_info(optimizer: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    if optimizer is None:
        return None
    hyper = {
        k: v
        for k, v in optimizer.param_groups[0].items()
        if k != "params" and isinstance(v, (int, float, str, bool, tuple, list, type(None)))
    }
    return {"class": type(optimizer).__name__, **json.loads(json.dumps(hyper, default=str))}


def _provenance(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    group: str,
    seed: int,
    every: str | int,
    probe: Any,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    n_probe = (
        0
        if probe is None or isinstance(probe, (str, Path))
        else sum(len(b[0] if isinstance(b, tuple) else b) for b in probe)
    )
    info = {
        "format": 1,
        "variant": VARIANT,
        "group": group,
        "seed": seed,
        "every": every,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "optimizer": _optimizer_info(optimizer),
        "probe_inputs": str(probe) if isinstance(probe, (str, Path)) else n_probe,
        "options": {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "git": _git_state(),
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    info["settings_hash"] = config_hash({k: info[k] for k in ("group", "seed", "every", "model", "options")})
    return info
