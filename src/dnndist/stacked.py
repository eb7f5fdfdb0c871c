"""Stacks of runs: K models trained side by side as one module (the training loop in
``dnndist.train`` always trains a stack; a run trained alone is a stack of one).

``StackedCNN`` holds K plain CNNs (the paper CNN family) of one architecture with
different weights, each reading its own input: conv1 is one convolution grouped over the
K input blocks (on the CPU it runs run by run, which is faster there), later convolutions
have groups=K, and the linear layers are batched matrix products, so K small models cost a
few large kernels instead of K x as many small ones. The models never mix: every input
block, output channel block, batch-norm channel and linear slice belongs to one run, so
gradients, Adam moments (element-wise) and even NaNs stay within their run; each run keeps
its own data order. ``Single`` is a stack of one for any model (ResNets, given weights),
computing exactly what the plain model does. Both run each activation that a max-pool
follows after the pool (``train_order``).

Both take inputs of shape (K, B, C, H, W) and labels (K, B), and give per-run mean losses
(the training objective: cross-entropy with ``train.label_smoothing``) and correct counts of
shape (K,); ``eval_sums`` is always the plain cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dnndist import DnndistError, inits, models

STACKABLE = ("paper_cnn", "plain_cnn")


def train_order(children: Iterable[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The (name, module) children in the order training runs them: an activation that is monotone
    (ReLU, LeakyReLU) and followed by a max-pool runs after the pool. Max-pooling commutes with a
    non-decreasing function, so the outputs are the same values and every gradient reaches the
    same input: ReLU's only new ties are at zero, where its gradient is zero, and LeakyReLU makes
    none unless two different inputs of a window round to one output (the pool would then pick
    the first of them, in training the larger). The activation and its backward pass then touch
    a quarter of the values. Extraction runs the model as it is (its post-activation features
    are the maps before the pool)."""
    order = list(children)
    for i in range(len(order) - 1):
        if isinstance(order[i][1], (nn.ReLU, nn.LeakyReLU)) and isinstance(order[i + 1][1], nn.MaxPool2d):
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


class Single(nn.Module):
    """A stack of one: the run's own model, computing what it computes (a plain CNN with each
    activation after its max-pool, ``train_order``)."""

    k = 1

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.order = [mod for _, mod in train_order(net.named_children())] if isinstance(net, models.Net) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order is None:
            return self.net(x)
        for mod in self.order:
            x = mod(x)
        return x

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, fmt: torch.memory_format, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(x[0].contiguous(memory_format=fmt))
        loss = F.cross_entropy(out, y[0], label_smoothing=label_smoothing)
        return loss.unsqueeze(0), (out.argmax(1) == y[0]).sum().unsqueeze(0)

    def eval_sums(
        self, x: torch.Tensor, y: torch.Tensor, fmt: torch.memory_format
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy (float64) and correct count (K,) of one shared batch (B, C, H, W)."""
        out = self(x.contiguous(memory_format=fmt))
        return F.cross_entropy(out, y, reduction="sum").double().unsqueeze(0), (out.argmax(1) == y).sum().unsqueeze(0)

    def l1_penalty(self) -> torch.Tensor:
        return sum(m.weight.abs().sum() for _, m in inits.weight_modules(self.net)).unsqueeze(0)  # type: ignore[union-attr]

    @torch.no_grad()
    def unstack_into(self, i: int, net: nn.Module) -> None:
        if net is not self.net:  # the run's own model already holds its weights
            net.load_state_dict(self.net.state_dict())


class StackedCNN(nn.Module):
    """K plain CNNs (same architecture, different weights) as one module."""

    first_by_run_on = ("cpu",)  # device types where the first conv runs run by run (_first_by_run)

    def __init__(self, nets: Sequence[models.Net]):
        super().__init__()
        self.k = len(nets)
        ref = nets[0]
        if ref.settings.name not in STACKABLE:
            raise DnndistError(f"stacked training supports {STACKABLE}, not {ref.settings.name!r}")
        order = train_order(ref.named_children())
        self.names = [name for name, _ in order]
        self.linears = {name for name, mod in order if isinstance(mod, nn.Linear)}
        if not isinstance(order[0][1], nn.Conv2d):
            raise DnndistError(f"stacked training needs a first conv layer, not {self.names[0]!r}")
        self.first_span = 2 if isinstance(order[1][1], nn.MaxPool2d) else 1  # conv1 [+ its pool]
        self.stack = nn.ModuleDict(
            {
                name: self._stacked(mod, [dict(n.named_children())[name] for n in nets])
                for name, mod in ref.named_children()
            }
        )

    def _stacked(self, mod: nn.Module, mods: list[nn.Module]) -> nn.Module:
        k = self.k
        if isinstance(mod, nn.Conv2d):  # every conv grouped per run: conv1 over the K input blocks
            conv = nn.Conv2d(
                mod.in_channels * k,
                mod.out_channels * k,
                mod.kernel_size,
                mod.stride,
                mod.padding,
                groups=k,
                dtype=mod.weight.dtype,
                device=mod.weight.device,
            )
            with torch.no_grad():
                conv.weight.copy_(torch.cat([m.weight for m in mods]))
                conv.bias.copy_(torch.cat([m.bias for m in mods]))
            return conv
        if isinstance(mod, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(
                mod.num_features * k, mod.eps, mod.momentum, dtype=mod.weight.dtype, device=mod.weight.device
            )
            with torch.no_grad():
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, attr).copy_(torch.cat([getattr(m, attr) for m in mods]))
                bn.num_batches_tracked.copy_(mod.num_batches_tracked)
            return bn
        if isinstance(mod, nn.Linear):
            lin = nn.Module()
            lin.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]).clone())  # (K, out, in)
            lin.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]).clone())  # (K, out)
            return lin
        if isinstance(mod, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.Flatten)):
            return mod
        raise DnndistError(f"cannot stack module {type(mod).__name__}")

    def forward(self, x: torch.Tensor, fmt: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """Inputs (K, B, C, H, W), one block per run -> logits (K, B, classes). The linear layers
        work on (K, features, B): each weight's gradient then comes out of the backward pass in
        the weight's own (K, out, in) layout, not as a transpose that autograd would copy."""
        k, b = x.shape[:2]
        names = self.names
        if x.device.type in self.first_by_run_on:  # the first conv (and its pool) run by run
            x, names = self._first_by_run(x, fmt), names[self.first_span :]
        else:  # one grouped kernel for all runs (on a GPU the launches are what costs)
            x = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:]).contiguous(memory_format=fmt)
        for name in names:
            mod = self.stack[name]
            if isinstance(mod, nn.Flatten):
                x = x.reshape(b, k, -1).permute(1, 2, 0)  # (K, C*h*w, B): each run's features in its own order
            elif name in self.linears:
                x = torch.baddbmm(mod.bias.unsqueeze(2), mod.weight, x)  # (K, out, B)
            else:
                x = mod(x)
        return x.transpose(1, 2)

    def _first_by_run(self, x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
        """The first conv, and the max-pool right after it (``train_order``), run by run on the
        CPU, the pooled maps concatenated: (K, B, C, H, W) -> (B, K*C', H', W'). A convolution
        grouped over K blocks of 3 input channels is slower on the CPU than K convolutions of one
        run each (whose outputs are a K-th of the size, and pooled while in cache): 24 instead of
        31 ms for conv1 + pool + ReLU forward and backward of 7 runs at batch 64."""
        conv = self.stack[self.names[0]]
        n = conv.out_channels // self.k
        pool = self.stack[self.names[1]] if self.first_span == 2 else None
        parts = []
        for i in range(self.k):
            h = F.conv2d(
                x[i].contiguous(memory_format=fmt),
                conv.weight[i * n : (i + 1) * n],
                conv.bias[i * n : (i + 1) * n],
                conv.stride,
                conv.padding,
            )
            parts.append(pool(h) if pool is not None else h)
        return torch.cat(parts, 1)

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, fmt: torch.memory_format, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(x, fmt)  # (K, B, classes)
        k, b = out.shape[:2]
        flat = F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none", label_smoothing=label_smoothing)
        losses = flat.view(k, b).mean(1)
        return losses, (out.argmax(2) == y).sum(1)

    def eval_sums(
        self, x: torch.Tensor, y: torch.Tensor, fmt: torch.memory_format
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(x.unsqueeze(0).expand(self.k, *x.shape), fmt)
        k, b = out.shape[:2]
        loss = F.cross_entropy(out.reshape(k * b, -1), y.repeat(k), reduction="none").view(k, b).double().sum(1)
        return loss, (out.argmax(2) == y).sum(1)

    def l1_penalty(self) -> torch.Tensor:
        """Per-run L1 norm of the conv and linear weights, shape (K,)."""
        total = torch.zeros(self.k, device=next(self.parameters()).device)
        for mod in self.stack.values():
            if isinstance(mod, nn.BatchNorm2d) or not hasattr(mod, "weight"):
                continue
            total = total + mod.weight.abs().reshape(self.k, -1).sum(1)
        return total

    @torch.no_grad()
    def unstack_into(self, i: int, net: nn.Module) -> None:
        """Copy run ``i``'s weights (and batch-norm buffers) into a per-run model."""
        for name, mod in net.named_children():
            src = self.stack[name]
            if isinstance(mod, nn.Conv2d):
                n = mod.out_channels
                mod.weight.copy_(src.weight[i * n : (i + 1) * n])
                mod.bias.copy_(src.bias[i * n : (i + 1) * n])
            elif isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(mod, attr).copy_(getattr(src, attr)[i * n : (i + 1) * n])
                mod.num_batches_tracked.copy_(src.num_batches_tracked)
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(src.weight[i])
                mod.bias.copy_(src.bias[i])


Stack = Single | StackedCNN


def make_stack(nets: Sequence[nn.Module]) -> Stack:
    """One run: itself; several: one wide model (paper/plain CNNs only)."""
    if not nets:
        raise DnndistError("a stack needs at least one run")
    return Single(nets[0]) if len(nets) == 1 else StackedCNN(nets)  # type: ignore[arg-type]
