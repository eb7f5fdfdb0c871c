"""The inputs of the feature and gradient passes: the splits' seeded samples, decoded once and kept on the device; a forward-hook recorder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dnndist import (
    DnndistError,
    checkpoints,
    data,
    models,
)
from dnndist.extract.store import SPLIT_ORDER, build_model
from dnndist.settings import ExtractSection, ExtractSettings, InputSettings, RandomInputs


# --------------------------------------------------------------------------- recording
class Recorder:
    """Forward hooks that keep the outputs of named modules of the last forward pass."""

    def __init__(
        self, model: torch.nn.Module, names: set[str], on_output: Callable[[str, torch.Tensor], None] | None = None
    ):
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(model.named_modules())
        for name in names:
            self.handles.append(modules[name].register_forward_hook(self._hook(name, on_output)))

    def _hook(self, name: str, on_output: Callable[[str, torch.Tensor], None] | None):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.outputs[name] = output
            self.inputs[name] = args[0]
            if on_output is not None:
                on_output(name, output)

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# --------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """The analysis splits as model inputs on the device: uint8 images (train/valid/test),
    or the 'random' split (Gaussian, already in input space), generated batch by batch."""

    ds: data.Dataset
    input: InputSettings
    random: RandomInputs

    @property
    def device(self) -> torch.device:
        return self.ds.images["train"].device

    def size(self, split: str) -> int:
        if split == "random":
            return int(self.random.random_size)
        if split not in self.ds.labels:
            raise DnndistError(f"split {split!r} is not available (have {sorted(self.ds.labels)} and 'random')")
        return len(self.ds.labels[split])

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "random":  # the order is the identity, so idx is a contiguous range
            start, n = int(idx[0]), len(idx)
            shape = tuple(self.ds.images["train"].shape[1:])
            x = data.random_inputs(n, shape, self.random.random_seed, start=start).to(self.device)
            return x, torch.full((n,), -1, dtype=torch.int64, device=self.device)
        inp = self.input
        x = data.prepare(self.ds.images[split][idx], self.ds.mean, self.ds.std, inp.transform, inp.threshold)
        return x, self.ds.labels[split][idx]

    def order(self, split: str, seed: int) -> torch.Tensor:
        """Seeded order in which a split's inputs are visited (the sample is its head);
        random inputs are i.i.d., so their order is the identity."""
        if split == "random":
            return torch.arange(self.size(split), device=self.device)
        g = torch.Generator().manual_seed(seed * 1009 + SPLIT_ORDER.index(split))
        return torch.randperm(self.size(split), generator=g).to(self.device)


def load_inputs(settings: ExtractSettings, store: str | Path, device: torch.device) -> Inputs:
    ds = data.make_splits(data.open_store(store), **settings.split.kwargs()).to(device)
    return Inputs(ds, settings.input, settings.random)


def extraction_setup(
    settings: ExtractSettings, store: str | Path
) -> tuple[ExtractSection, torch.device, Inputs, models.Net, list[models.LayerSpec]]:
    """What both forward-pass extractors start from: inputs and model on the device, the analysed layers."""
    device = checkpoints.resolve_device(settings.train.device)
    inputs = load_inputs(settings, store, device)
    fmt = checkpoints.memory_format(settings.train)
    model = build_model(settings, data.store_info(store)).to(device=device, memory_format=fmt).eval()
    return settings.extract, device, inputs, model, [s for s in model.layer_specs if s.analysed]
