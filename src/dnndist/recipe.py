"""Per-step pieces of a training recipe that run on the device, inside the captured step of
``dnndist.train`` (no host sync, no Python-side state): random flip-and-crop augmentation of
uint8 batches and the one-cycle learning rate.

Augmentation randomness is counter-based: every draw is a hash of (run seed, global step,
position in the batch), so a run sees the same augmented batches alone or in a stack, after a
resume, in a replayed divergence window and inside a CUDA graph (the step number is a device
tensor there), with no generator state to save. The hash is ``lowbias32`` (C. Wellons'
hash-prospector), a bijection of 32-bit words, computed in int64 with 16-bit partial
products so that nothing overflows.

flip_crop (the standard CIFAR recipe): each image is shifted by (dy, dx), both uniform in
[-4, 4] (a 32x32 crop of the image zero-padded by 4 pixels on every side), then mirrored left
to right with probability 1/2. The draws are 16 and 15 bits reduced modulo 9, so their
distribution is uniform to within 3e-4.

onecycle: with T = epochs x steps per epoch and W = warmup x T, the update of step t (0-based,
counted over the whole training) uses

    lr_t = lr/div + (lr - lr/div) * t / W     for t < W   (linear warm-up from lr/div)
    lr_t = lr * (T - t) / (T - W)             for t >= W  (linear decay; the last step uses lr/(T - W))
"""

from __future__ import annotations

import torch

M32 = 0xFFFFFFFF
PAD = 4  # pixels of zero padding around the image for flip_crop
SALT = 0x6A09E667  # keeps the augmentation stream apart from other uses of the seed
AUGMENTS = ("none", "flip_crop")
SCHEDULES = ("constant", "onecycle")

__all__ = ["AUGMENTS", "PAD", "SCHEDULES", "augment", "crop_flip", "draws", "mix32", "onecycle_lr"]


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """Low 32 bits of x * c for x in [0, 2^32) and a 32-bit constant c, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a well-mixing bijection of 32-bit words held in int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draws(seeds: torch.Tensor, step: int | torch.Tensor, batch: int) -> torch.Tensor:
    """32-bit random words (K, batch) for runs of seeds (K,) at global step ``step``: a pure
    function of (seed, step, position in the batch)."""
    seeds = seeds.to(torch.int64)
    key = mix32(mix32((seeds & M32) ^ SALT) ^ ((seeds >> 32) & M32))
    step_t = torch.as_tensor(step, dtype=torch.int64, device=seeds.device)
    key = mix32(key ^ (step_t & M32))
    return mix32(key.unsqueeze(1) ^ torch.arange(batch, dtype=torch.int64, device=seeds.device))


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """out[n, :, y, x] = images[n, :, y + dy[n], x' + dx[n]], zero outside the image, with
    x' = W - 1 - x where flip[n] else x: the crop at offset (dy, dx) of the zero-padded image,
    then mirrored. uint8 (N, C, H, W) in, same dtype and shape out; one gather."""
    n, c, h, w = images.shape
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    rows = ys + dy.unsqueeze(1)  # (N, H)
    cols = torch.where(flip.unsqueeze(1), w - 1 - xs, xs) + dx.unsqueeze(1)  # (N, W)
    inside = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)  # (N, H, W)
    idx = (rows.clamp(0, h - 1).unsqueeze(2) * w + cols.clamp(0, w - 1).unsqueeze(1)).reshape(n, 1, h * w)
    out = images.reshape(n, c, h * w).gather(2, idx.expand(n, c, h * w)).view(n, c, h, w)
    return out * inside.unsqueeze(1).to(out.dtype)


def augment(images: torch.Tensor, words: torch.Tensor, kind: str) -> torch.Tensor:
    """The training augmentation ``kind`` of uint8 images (N, C, H, W), one random word (N,) per image."""
    if kind == "none":
        return images
    if kind != "flip_crop":
        raise ValueError(f"unknown augmentation {kind!r} (known: {', '.join(AUGMENTS)})")
    span = 2 * PAD + 1
    dy = ((words >> 1) & 0xFFFF) % span - PAD
    dx = ((words >> 17) & 0x7FFF) % span - PAD
    return crop_flip(images, dy, dx, (words & 1).bool())


def onecycle_lr(step: int | torch.Tensor, lr: float, total: int, warmup: float, div: float) -> torch.Tensor:
    """The one-cycle learning rate of step ``step`` (module docstring), a float64 tensor on the step's device."""
    t = torch.as_tensor(step).to(torch.float64)
    w = warmup * total
    up = lr / div + (lr - lr / div) * t / max(w, 1e-12)
    down = lr * (total - t) / (total - w)
    return torch.where(t < w, up, down)
