"""Emission/absorption: quadratic form == explicit maps == autograd, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnndist.gradients import emission_absorption, emission_absorption_explicit, explicit_maps, local_gradient_sq_norms

CASES = [
    # (B, C_in, C_out, H, W, k, stride, padding, dilation)
    (3, 4, 5, 8, 8, 3, 1, 1, 1),
    (2, 3, 4, 9, 7, 3, 2, 1, 1),  # stride 2, non-square, odd
    (2, 3, 4, 10, 6, 3, 2, 0, 1),  # stride 2, padding 0
    (2, 5, 3, 7, 9, 1, 1, 0, 1),  # 1x1 kernel
    (2, 4, 6, 8, 8, 1, 2, 0, 1),  # 1x1 stride-2 downsample (ResNet)
    (1, 3, 2, 11, 12, 5, 1, 2, 1),  # 5x5
    (2, 2, 3, 12, 10, 3, 1, 2, 2),  # dilation 2
    (2, 3, 4, 13, 11, (3, 5), (2, 1), (1, 0), 1),  # rectangular kernel, mixed stride/padding
    (2, 16, 16, 16, 16, 3, 1, 1, 1),  # paper CNN conv2 shape
]


def setup(case, dtype=torch.float64, seed=0):
    b, ci, co, h, w, k, s, p, d = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, ci, h, w, dtype=dtype, generator=g, requires_grad=True)
    kk = (k, k) if isinstance(k, int) else k
    weight = torch.randn(co, ci, *kk, dtype=dtype, generator=g)
    out = F.conv2d(x, weight, stride=s, padding=p, dilation=d)
    grad_out = torch.randn(out.shape, dtype=dtype, generator=g)
    return x, weight, out, grad_out, (s, p, d)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_quadratic_form_matches_explicit_maps_and_autograd(case):
    x, weight, out, grad_out, (s, p, d) = setup(case)
    size = tuple(x.shape[-2:])
    maps = explicit_maps(grad_out, weight, size, s, p, d)
    # the reference itself: summing the local gradients over c1 gives autograd's input gradient
    (autograd,) = torch.autograd.grad(out, x, grad_out)
    assert torch.allclose(maps.sum(1), autograd, rtol=1e-12, atol=1e-12)
    # per-pair squared norms
    q = local_gradient_sq_norms(grad_out, weight, size, s, p, d)
    ref = maps.flatten(3).pow(2).sum(3)
    assert torch.allclose(q, ref, rtol=1e-9, atol=0), (q - ref).abs().max()
    em, ab = emission_absorption(grad_out, weight, size, s, p, d)
    em_ref, ab_ref = emission_absorption_explicit(grad_out, weight, size, s, p, d)
    assert em.shape == (x.shape[0], weight.shape[0]) and ab.shape == (x.shape[0], weight.shape[1])
    assert torch.allclose(em, em_ref, rtol=1e-9, atol=0) and torch.allclose(ab, ab_ref, rtol=1e-9, atol=0)


def test_definition_on_a_hand_case():
    # one input channel, one output channel, 1x1 kernel: LG = w * G, so Em = Ab = |w| * ||G||
    grad_out = torch.tensor([[[[3.0, 4.0]]]], dtype=torch.float64)
    weight = torch.tensor([[[[-2.0]]]], dtype=torch.float64)
    em, ab = emission_absorption(grad_out, weight, (1, 2))
    assert em.item() == pytest.approx(10.0) and ab.item() == pytest.approx(10.0)


def test_chunking_over_channels_gives_the_same_result():
    _, weight, _, grad_out, (s, p, d) = setup(CASES[-1])
    full = local_gradient_sq_norms(grad_out, weight, (16, 16), s, p, d)
    chunked = local_gradient_sq_norms(grad_out, weight, (16, 16), s, p, d, max_bytes=1)
    assert torch.allclose(full, chunked, rtol=1e-12, atol=0)


def test_float32_close_to_float64():
    x, weight, _, grad_out, (s, p, d) = setup(CASES[1])
    em64, ab64 = emission_absorption(grad_out, weight, tuple(x.shape[-2:]), s, p, d)
    em32, ab32 = emission_absorption(grad_out.float(), weight.float(), tuple(x.shape[-2:]), s, p, d)
    assert torch.allclose(em32.double(), em64, rtol=1e-5) and torch.allclose(ab32.double(), ab64, rtol=1e-5)


def test_unsupported_settings_are_rejected():
    grad_out, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match="groups=1"):
        emission_absorption(grad_out, weight, (5, 5), padding=1, groups=2)
    with pytest.raises(ValueError, match="channels"):
        emission_absorption(torch.randn(1, 3, 5, 5), weight, (5, 5), padding=1)
