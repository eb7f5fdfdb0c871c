"""B1: training throughput for the 7-init paper workload, side by side in one process.

    python -m benchmarks.train_stacked [--steps 100] [--device auto] [--vmap]
    python -m benchmarks.train_stacked --epoch-on results/<name>/data/dataset.zarr

Rows (all the paper CNN, Adam, batch 64, the same seeded batches for every run):
- naive: a torchvision-style Dataset returning per-sample normalised float tensors through
  a DataLoader (0 workers), one run after another, default layout, unfused Adam;
- sequential: dnndist's per-run path (uint8 data resident on the device, normalised per
  batch, channels_last, fused Adam), one run after another;
- sequential and stacked both run dnndist's one training loop (train.Trainer): seven stacks
  of one, or one stack of seven (grouped convolutions, each run on its own batches);
- on CUDA: the stack's step as a CUDA graph, and a table of CUDA graph vs eager per step
  for stacks of K = 1, 7, 21, 70 runs (the seven inits x seeds);
- vmap (with --vmap): torch.func.stack_module_state + vmap(functional_call), fused Adam.
Prints images x runs / s, the ratio to the naive baseline, GFLOP/s (9.37 MFLOP per image
and training step) and the fraction of the CPU's practical FP32 peak (165 GFLOP/s on this
machine's 2 cores, ../shared/perf-notes.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks import device_name
from dnndist import data, train
from dnndist.inits import INIT_NAMES
from dnndist.settings import ModelSettings, RunSettings

FLOP_PER_IMAGE_STEP = 9.37e6
CPU_PEAK_GFLOPS = 165.0
INITS = [i for i in INIT_NAMES if i != "torch_default"]  # the paper's seven


def run_settings(
    init: str, device: str, fast: bool, batch_size: int = 64, seed: int = 0, graphs: bool = True
) -> RunSettings:
    return RunSettings.from_dict(settings_dict(init, device, fast, batch_size, seed, graphs))


def settings_dict(init: str, device: str, fast: bool, batch_size: int, seed: int, graphs: bool) -> dict:
    return {
        "run": {"variant": "base", "init_name": init, "seed": seed},
        "model": ModelSettings.from_dict({"name": "paper_cnn"}).to_dict(),  # the paper CNN, defaults
        "init": {"gain": "torch", "bias": "auto"},
        "train": {
            "optimizer": "adam",
            "lr": 1e-4,
            "momentum": 0.9,
            "batch_size": batch_size,
            "epochs": 1,
            "weight_decay": 0.0,
            "l1": 0.0,
            "checkpoints": [],
            "eval_batch_size": 1000,
            "device": device,
            "channels_last": fast,
            "deterministic": False,
            "check_every": 100,
            "diverge_above": 1.0e9,
            "cuda_graphs": graphs,
            "nesterov": False,
            "schedule": "constant",
            "warmup": 0.3,
            "warmup_div": 25.0,
            "augment": "none",
            "label_smoothing": 0.0,
        },
        "input": {"transform": "as_is", "threshold": 0.2},
        "split": {"valid_size": 5000, "split_seed": 0, "valid_split": "train"},
        "checkpoint_epochs": [0],
    }


def stack_settings(k: int, device: str, fast: bool = True, graphs: bool = True) -> list[RunSettings]:
    """K runs: the seven inits, then again with the next seed, and so on."""
    return [run_settings(INITS[i % len(INITS)], device, fast, seed=i // len(INITS), graphs=graphs) for i in range(k)]


def trainer_epochs(settings: list[RunSettings], ds: data.Dataset, device: torch.device, epochs: int = 1) -> float:
    """Images x runs per second of dnndist's training loop (train.Trainer) over ``epochs`` epochs
    of ``ds``, after one untimed warm-up epoch (kernel selection; the CUDA graph is captured there)."""
    t = train.Trainer(settings, ds, device)
    t.epoch(0, lambda n: None)
    _sync(device)
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        t.epoch(e * t.steps, lambda n: None)
    _sync(device)
    return t.k * len(ds.labels["train"]) * epochs / (time.perf_counter() - t0)


def dataset(n: int, device: torch.device) -> data.Dataset:
    images, labels = data.synthetic(n, 32, seed=0)
    return data.Dataset(
        {"train": torch.from_numpy(images)},
        {"train": torch.from_numpy(labels)},
        [str(i) for i in range(10)],
        torch.tensor([0.49, 0.48, 0.44]),
        torch.tensor([0.25, 0.24, 0.26]),
    ).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive(ds: data.Dataset, device: torch.device, warm: int) -> float:
    """Per-sample Dataset + DataLoader, one run at a time: the usual tutorial set-up."""
    cpu_images = ds.images["train"].cpu()
    cpu_labels = ds.labels["train"].cpu()
    mean, std = ds.mean.cpu().view(3, 1, 1), ds.std.cpu().view(3, 1, 1)

    class PerSample(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(cpu_labels)

        def __getitem__(self, i: int):
            return (cpu_images[i].float() / 255 - mean) / std, cpu_labels[i]

    total, images = 0.0, 0
    for init in INITS:
        s = run_settings(init, device.type, fast=False)
        model = train.build_model(s, ds, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loader = torch.utils.data.DataLoader(
            PerSample(), batch_size=64, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0)
        )
        warm = min(warm, len(loader) - 1)  # at least one timed step
        for i, (x, y) in enumerate(loader):
            if i == warm:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= warm:
                images += len(y)
        _sync(device)
        total += time.perf_counter() - t0
    return images / total


def sequential(ds: data.Dataset, device: torch.device) -> float:
    """The seven runs one after another, each a stack of one (dnndist's per-run jobs)."""
    rates = [trainer_epochs([run_settings(init, device.type, fast=True)], ds, device) for init in INITS]
    return len(INITS) / sum(1.0 / r for r in rates)  # total images / total time


def stacked_rate(ds: data.Dataset, device: torch.device, k: int = 7, graphs: bool = True) -> float:
    return trainer_epochs(stack_settings(k, device.type, graphs=graphs), ds, device)


def vmap_rate(ds: data.Dataset, device: torch.device, warm_ds: data.Dataset) -> float:
    from torch.func import functional_call, stack_module_state, vmap

    sets = [run_settings(i, device.type, fast=True) for i in INITS]
    nets = [train.build_model(s, ds, device) for s in sets]
    params, buffers = stack_module_state(nets)
    base = nets[0]
    opt = torch.optim.Adam(list(params.values()), lr=1e-4, fused=device.type in ("cpu", "cuda"))

    def f(p, b, x):
        return functional_call(base, (p, b), (x,))

    def epoch(d: data.Dataset, g: torch.Generator) -> int:
        n = len(d.labels["train"])
        perm = torch.randperm(n, generator=g, device=device)
        done = 0
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            x = data.prepare(d.images["train"][idx], d.mean, d.std).contiguous(memory_format=torch.channels_last)
            y = d.labels["train"][idx]
            out = vmap(f, in_dims=(0, 0, None))(params, buffers, x)  # (K, B, 10)
            k, b = out.shape[:2]
            losses = F.cross_entropy(out.reshape(k * b, -1), y.repeat(k), reduction="none").view(k, b).mean(1)
            if not bool(torch.isfinite(losses).all()):
                raise RuntimeError("diverged")
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            done += len(idx) * k
        return done

    g = torch.Generator(device=device).manual_seed(0)
    epoch(warm_ds, g)
    _sync(device)
    t0 = time.perf_counter()
    n = epoch(ds, g)
    _sync(device)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=100, help="timed training steps (batches of 64) per run")
    p.add_argument("--vmap", action="store_true", help="also time the torch.func.vmap variant")
    p.add_argument("--stacks", default="1,7,21,70", help="stack sizes of the CUDA graph vs eager table (CUDA only)")
    p.add_argument(
        "--epoch-on",
        metavar="DATASET_ZARR",
        help="instead: one epoch of the 7 inits stacked on a dataset store's train split (the paper's "
        "45,000/5,000 split) and its evaluation, and the 7 x 50-epoch time at that rate",
    )
    args = p.parse_args(argv)
    device = train.resolve_device(args.device)
    if args.epoch_on:
        return [paper_epoch(args.epoch_on, device)]
    n = 64 * args.steps
    ds, warm = dataset(n, device), dataset(64 * 10, device)
    name = device_name(device)
    print(
        f"B1 training, paper CNN, 7 inits, batch 64, {args.steps} timed steps per run; device: {name}; torch {torch.__version__}"
    )
    rows = [
        ("naive (per-sample DataLoader, one run at a time)", naive(ds, device, warm=5)),
        ("sequential (device-resident uint8, channels_last, fused Adam)", sequential(ds, device)),
        ("stacked (7 runs as one grouped-conv model)", stacked_rate(ds, device, graphs=False)),
    ]
    if device.type == "cuda":
        rows.append(("stacked, CUDA graph (7 runs)", stacked_rate(ds, device, graphs=True)))
    if args.vmap:
        rows.append(("vmap (stack_module_state + functional_call)", vmap_rate(ds, device, warm)))
    base = rows[0][1]
    print(f"{'set-up':<64} {'img*runs/s':>10} {'vs naive':>8} {'GFLOP/s':>8} {'of peak':>8} {'7x50 epochs':>12}")
    out = []
    for label, rate in rows:
        gflops = rate * FLOP_PER_IMAGE_STEP / 1e9
        peak = f"{gflops / CPU_PEAK_GFLOPS:.0%}" if device.type == "cpu" else "-"
        hours = 7 * 50 * 50_000 / rate / 3600
        print(f"{label:<64} {rate:>10.0f} {rate / base:>7.2f}x {gflops:>8.1f} {peak:>8} {hours:>10.2f} h")
        out.append({"setup": label, "rate": rate, "ratio": rate / base})
    if device.type == "cuda":
        out += graph_table(ds, device, [int(k) for k in args.stacks.split(",")])
    return out


def paper_epoch(store: str, device: torch.device, valid_size: int = 5000) -> dict:
    """One epoch of the paper's 7 inits as one stack on real data (e.g. the shared CIFAR-10's
    dataset.zarr), with each epoch's evaluation of the 7 runs on the valid and test splits."""
    ds = data.make_splits(data.open_store(store), valid_size=valid_size, split_seed=0).to(device)
    settings = stack_settings(7, device.type)
    t = train.Trainer(settings, ds, device)
    t0 = time.perf_counter()
    t.epoch(0, lambda n: None)
    _sync(device)
    t1 = time.perf_counter()
    train.eval_rows(t.stack, ds, settings[0].train, settings[0].input, 1)
    t2 = time.perf_counter()
    rate = t.k * t.n_train / (t1 - t0)
    print(
        f"one epoch of 7 x {t.n_train:,} images on {device_name(device)}: training {t1 - t0:.1f} s "
        f"({rate:,.0f} images x runs/s), evaluation {t2 - t1:.1f} s; 7 x 50 epochs: {50 * (t2 - t0) / 60:.1f} min"
    )
    return {"train_s": t1 - t0, "eval_s": t2 - t1, "rate": rate, "minutes_50": 50 * (t2 - t0) / 60}


def graph_table(ds: data.Dataset, device: torch.device, sizes: list[int]) -> list[dict]:
    """One training step of a stack of K runs: CUDA graph vs eager (CUDA only)."""
    print(
        f"\n{'K runs':>6} {'eager ms/step':>14} {'graph ms/step':>14} {'graph vs eager':>15} {'K x 50 epochs x 50k':>20}"
    )
    out = []
    for k in sizes:
        eager = stacked_rate(ds, device, k, graphs=False)
        graph = stacked_rate(ds, device, k, graphs=True)
        print(
            f"{k:>6} {1000 * 64 * k / eager:>14.2f} {1000 * 64 * k / graph:>14.2f} {graph / eager:>14.2f}x "
            f"{k * 50 * 50_000 / graph:>18.0f} s"
        )
        out.append(
            {"k": k, "eager_rate": eager, "graph_rate": graph, "ratio": graph / eager, "ms": 1000 * 64 * k / graph}
        )  # ms per step of k runs
    return out


if __name__ == "__main__":
    main()
