"""Channel-wise gradients of a convolution: emission and absorption (paper, section 2.2).

For a conv with kernel W (C_out, C_in, kh, kw) and upstream gradient G (C_out, H_out, W_out),
the gradient reaching input channel c2 is a sum over output channels c1 of local gradients

    LG^{c1->c2} = single-channel transposed convolution of G[c1] with W[c1, c2]  (H_in x W_in)

    Em^{c1} = sum_c2 ||LG^{c1->c2}||_2      Ab^{c2} = sum_c1 ||LG^{c1->c2}||_2

``emission_absorption`` never materialises the C_out x C_in maps: with w = W[c1, c2]
flattened, ||LG^{c1->c2}||^2 = w^T M_{c1} w, where M_{c1} (kh*kw x kh*kw) is the
autocorrelation of the stride-dilated, padded G[c1] over the kernel offsets, restricted
to the H_in x W_in input plane. M costs B*C_out*(kh*kw)^2*H_in*W_in multiply-adds
(one batched matmul), the quadratic forms B*C_out*C_in*(kh*kw)^2. ``explicit_maps`` is
the direct reference (grouped conv_transpose2d) used by the tests and the benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_Pair = int | tuple[int, int]


def _pair(v: _Pair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check(grad_output: torch.Tensor, weight: torch.Tensor, groups: int) -> None:
    if groups != 1:
        raise ValueError(f"emission/absorption supports groups=1 convolutions only (got groups={groups})")
    if grad_output.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected grad_output (B, C_out, H, W) and weight (C_out, C_in, kh, kw), got {tuple(grad_output.shape)} and {tuple(weight.shape)}"
        )
    if grad_output.shape[1] != weight.shape[0]:
        raise ValueError(f"grad_output has {grad_output.shape[1]} channels but weight has C_out={weight.shape[0]}")


def _offset_maps(
    grad_output: torch.Tensor,
    kernel: tuple[int, int],
    input_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """P (B, C, kh*kw, H_in*W_in): P[b, c, k, (i, j)] = G[b, c, y, x] where the kernel tap k
    (flipped order) of output position (y, x) lands on input position (i, j), else 0."""
    b, c, ho, wo = grad_output.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (hi, wi) = kernel, stride, padding, dilation, input_size
    up = grad_output
    if sh > 1 or sw > 1:  # insert stride-1 zeros between outputs
        up = grad_output.new_zeros(b, c, (ho - 1) * sh + 1, (wo - 1) * sw + 1)
        up[:, :, ::sh, ::sw] = grad_output
    top, left = (kh - 1) * dh - ph, (kw - 1) * dw - pw
    bottom = hi + (kh - 1) * dh - top - up.shape[2]
    right = wi + (kw - 1) * dw - left - up.shape[3]
    padded = F.pad(up, (left, right, top, bottom))  # negative pads crop
    cols = F.unfold(padded, (kh, kw), dilation=(dh, dw))  # (B, c*K, L), channel-major
    return cols.view(b, c, kh * kw, hi * wi)


def local_gradient_sq_norms(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: _Pair = 1,
    padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    max_bytes: int = 32 << 20,
) -> torch.Tensor:
    """||LG^{c1->c2}||^2 for every sample and channel pair: (B, C_out, C_in), by quadratic forms.

    Works in chunks of output channels so that the offset maps stay under ``max_bytes``.
    """
    _check(grad_output, weight, groups)
    b, co = grad_output.shape[:2]
    ci, kh, kw = weight.shape[1:]
    hi, wi = _pair(input_size)
    w = weight.flip(-2, -1).reshape(co, ci, kh * kw).to(grad_output.dtype)  # unfold order is flipped
    per_channel = b * kh * kw * hi * wi * grad_output.element_size()
    step = max(1, min(co, max_bytes // max(per_channel, 1)))
    out = grad_output.new_empty(b, co, ci)
    for start in range(0, co, step):
        stop = min(co, start + step)
        p = _offset_maps(grad_output[:, start:stop], (kh, kw), (hi, wi), _pair(stride), _pair(padding), _pair(dilation))
        m = p @ p.transpose(-1, -2)  # (B, c, K, K) autocorrelation over the input plane
        wt = w[start:stop].transpose(1, 2)  # (c, K, C_in)
        out[:, start:stop] = ((m @ wt) * wt).sum(-2)  # w^T M w for every (c1, c2)
    return out.clamp_(min=0)


def emission_absorption(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: _Pair = 1,
    padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission (B, C_out) and absorption (B, C_in): sums of the L2 norms of the local-gradient maps."""
    norms = local_gradient_sq_norms(grad_output, weight, input_size, stride, padding, dilation, groups).sqrt_()
    return norms.sum(2), norms.sum(1)


def explicit_maps(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: _Pair = 1,
    padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Reference: every LG^{c1->c2} map, (B, C_out, C_in, H_in, W_in), by grouped conv_transpose2d."""
    _check(grad_output, weight, groups)
    b, co, ho, wo = grad_output.shape
    ci, kh, kw = weight.shape[1:]
    (sh, sw), (ph, pw), (dh, dw), (hi, wi) = _pair(stride), _pair(padding), _pair(dilation), _pair(input_size)
    base_h = (ho - 1) * sh - 2 * ph + dh * (kh - 1) + 1
    base_w = (wo - 1) * sw - 2 * pw + dw * (kw - 1) + 1
    maps = F.conv_transpose2d(
        grad_output,
        weight.to(grad_output.dtype),
        stride=(sh, sw),
        padding=(ph, pw),
        output_padding=(hi - base_h, wi - base_w),
        groups=co,
        dilation=(dh, dw),
    )
    return maps.reshape(b, co, ci, hi, wi)


def emission_absorption_explicit(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: _Pair = 1,
    padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    norms = explicit_maps(grad_output, weight, input_size, stride, padding, dilation, groups).flatten(3).norm(dim=3)
    return norms.sum(2), norms.sum(1)
