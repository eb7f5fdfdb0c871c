"""Channel-wise gradients of a convolution: emission and absorption (paper, section 2.2).

For a conv with kernel W (C_out, C_in/groups, kh, kw) and upstream gradient G (C_out, H_out, W_out),
the gradient reaching input channel c2 is a sum over the output channels c1 of its group of local
gradients

    LG^{c1->c2} = single-channel transposed convolution of G[c1] with W[c1, c2]  (H_in x W_in)

    Em^{c1} = sum_c2 ||LG^{c1->c2}||_2      Ab^{c2} = sum_c1 ||LG^{c1->c2}||_2

``emission_absorption`` never materialises the C_out x C_in maps: with w = W[c1, c2]
flattened, ||LG^{c1->c2}||^2 = w^T M_{c1} w, where M_{c1} (kh*kw x kh*kw) is the
autocorrelation of the padded G[c1] over the kernel offsets, restricted to the H_in x W_in
input plane (exact at the borders: no wrap-around, no padding counted).

- **Strides by phases.** With stride s, an input position i receives only the taps p whose
  p*dilation has i's residue mod s. The plane splits into s_h*s_w phases, each a stride-1
  problem on G itself with a sub-kernel W[..., p0::s, q0::s] (``_phases``): M costs
  sum over phases of K_phase^2 * plane/s^2 instead of (kh*kw)^2 * H_in*W_in on a G
  dilated by zeros (ResNet's 7x7 stride-2 stem: 625 instead of 2,401 per position of a
  plane 4 times smaller, 15 times less work).
- **Quadratic forms as one matrix product.** w^T M w = sum_{k<=k'} M[k, k'] * (2 -
  [k = k']) w_k w_k': the K(K+1)/2 distinct entries of M times the weight pair products
  (computed once per call), a batched GEMM of C_out * C_in * K(K+1)/2 multiply-adds per input.
- **Groups.** Only the pairs of a group are connected: norms are (B, C_out, C_in/groups);
  absorption sums them per group onto its input channels.

``explicit_maps`` is the direct reference (grouped conv_transpose2d) used by the tests and
the benchmark; the tests check both against autograd's input gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_Pair = int | tuple[int, int]


def _pair(v: _Pair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check(grad_output: torch.Tensor, weight: torch.Tensor, groups: int) -> None:
    if grad_output.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected grad_output (B, C_out, H, W) and weight (C_out, C_in/groups, kh, kw), got {tuple(grad_output.shape)} and {tuple(weight.shape)}"
        )
    if grad_output.shape[1] != weight.shape[0]:
        raise ValueError(f"grad_output has {grad_output.shape[1]} channels but weight has C_out={weight.shape[0]}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups={groups} does not divide C_out={weight.shape[0]}")


def conv_geometry(conv: torch.nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    """(stride, top/left padding, dilation, groups) of a zero-padded Conv2d, ``padding='same'`` and
    ``'valid'`` included ('same' pads d*(k-1)//2 before and the rest after, as PyTorch; the input
    size fixes the rest). ValueError for another ``padding_mode``: reflect, replicate and circular
    padding fold border gradients back into the plane, which no local-gradient map of one pair
    (c1, c2) on the plane describes."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding_mode {conv.padding_mode!r}: emission/absorption supports zero padding only")
    k, d = _pair(conv.kernel_size), _pair(conv.dilation)
    if conv.padding == "valid":
        pad = (0, 0)
    elif conv.padding == "same":
        pad = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
    else:
        pad = _pair(conv.padding)
    return _pair(conv.stride), pad, d, conv.groups


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
    padded = F.pad(up, (left, right, top, bottom)).contiguous()  # negative pads crop
    s0, s1, s2, s3 = padded.stride()  # F.unfold's layout as one strided copy (im2col is slower)
    view = padded.as_strided((b, c, kh, kw, hi, wi), (s0, s1, dh * s2, dw * s3, s2, s3))
    return view.reshape(b, c, kh * kw, hi * wi)


def _phases(k: int, stride: int, padding: int, dilation: int, size: int) -> list[tuple[slice, int, int, int]]:
    """One axis split by stride phase: per phase, (the taps' slice of the kernel, its dilation,
    the stride-1 padding and plane length of the phase). Input position i = y*s - pad + p*d
    takes the taps p whose p*d has i's residue mod s; those taps are p0, p0 + s/g, ... (g =
    gcd(s, d)) and the phase's positions i = s*u + p0*d - pad with u = y + a*d/g: a stride-1
    transposed conv of G with dilation d/g on the plane of u with 0 <= i < size."""
    g = math.gcd(stride, dilation)
    step = stride // g
    out = []
    for p0 in range(min(step, k)):
        c = p0 * dilation - padding
        lo, hi = -(c // stride), (size - 1 - c) // stride  # ceil(-c / s), floor((size - 1 - c) / s)
        if hi >= lo:
            out.append((slice(p0, None, step), dilation // g, lo, hi - lo + 1))
    return out


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
    """||LG^{c1->c2}||^2 for every sample and connected channel pair: (B, C_out, C_in/groups).

    Works per stride phase (``_phases``) and in chunks of output channels so that the offset maps
    stay under ``max_bytes``."""
    _check(grad_output, weight, groups)
    b, co = grad_output.shape[:2]
    (sh, sw), (ph, pw), (dh, dw), (hi, wi) = _pair(stride), _pair(padding), _pair(dilation), _pair(input_size)
    weight = weight.to(grad_output.dtype)
    out = None
    for rows, dil_h, pad_h, size_h in _phases(weight.shape[2], sh, ph, dh, hi):
        for cols, dil_w, pad_w, size_w in _phases(weight.shape[3], sw, pw, dw, wi):
            sub = weight[:, :, rows, cols]
            part = _stride1_sq_norms(grad_output, sub, (size_h, size_w), (pad_h, pad_w), (dil_h, dil_w), max_bytes)
            out = part if out is None else out.add_(part)
    if out is None:  # no input position receives a tap
        return grad_output.new_zeros(b, co, weight.shape[1])
    return out.clamp_(min=0)


def _stride1_sq_norms(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    max_bytes: int,
) -> torch.Tensor:
    """w^T M w of a stride-1 transposed conv for every (sample, c1, c2): (B, C_out, C_in/groups)."""
    b, co = grad_output.shape[:2]
    ci, kh, kw = weight.shape[1:]
    k = kh * kw
    iu, ju = torch.triu_indices(k, k, device=grad_output.device)
    # w_k w_k' for the J = K(K+1)/2 pairs k <= k' (unfold order is flipped): (C_out, J, C_in)
    wt = weight.flip(-2, -1).reshape(co, ci, k).transpose(1, 2).contiguous()
    pairs = wt.new_empty(co, len(iu), ci)
    row = 0
    for a in range(k):  # triu_indices' order: (a, a), (a, a + 1), ..., (a, K - 1), then a + 1
        torch.mul(wt[:, a : a + 1], wt[:, a:], out=pairs[:, row : row + k - a])
        row += k - a
    flat = iu * k + ju  # the pairs in M flattened; off the diagonal they count twice
    twice = torch.where(iu == ju, 1.0, 2.0).to(grad_output.dtype)
    per_channel = b * k * input_size[0] * input_size[1] * grad_output.element_size()
    step = max(1, min(co, max_bytes // max(per_channel, 1)))
    out = grad_output.new_empty(b, co, ci)
    for start in range(0, co, step):
        stop = min(co, start + step)
        p = _offset_maps(grad_output[:, start:stop], (kh, kw), input_size, (1, 1), padding, dilation)
        m = p @ p.transpose(-1, -2)  # (B, c, K, K) autocorrelation over the phase's plane
        mp = (m.flatten(-2).index_select(-1, flat) * twice).transpose(0, 1)  # (c, B, J)
        out[:, start:stop] = torch.bmm(mp, pairs[start:stop]).transpose(0, 1)
    return out


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
    return _sums(norms, groups)


def _sums(norms: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission (B, C_out) and absorption (B, C_in) from the norms (B, C_out, C_in/groups) of the connected pairs."""
    b, co, cig = norms.shape
    return norms.sum(2), norms.view(b, groups, co // groups, cig).sum(2).reshape(b, groups * cig)


def explicit_maps(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: _Pair = 1,
    padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Reference: every LG^{c1->c2} map of the connected pairs, (B, C_out, C_in/groups, H_in, W_in),
    by a conv_transpose2d with one group per output channel."""
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
    return _sums(norms, groups)
