"""Emission/absorption: quadratic form == explicit maps == autograd, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnndist.gradients import (
    conv_geometry,
    emission_absorption,
    emission_absorption_explicit,
    explicit_maps,
    local_gradient_sq_norms,
)

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
    (2, 3, 4, 20, 18, 7, 2, 3, 1),  # ResNet stem: 7x7, stride 2, padding 3
    (2, 3, 4, 17, 16, 7, 2, 3, 1),  # odd plane: the last row receives nothing from some phases
    (2, 3, 2, 14, 13, 3, 3, 1, 1),  # stride 3 > kernel phases
    (2, 2, 3, 15, 14, 3, 2, 2, 2),  # stride 2 with dilation 2: gcd 2, a single phase per axis
    (2, 2, 3, 16, 15, 3, 2, 3, 3),  # stride 2 with dilation 3
    (2, 2, 3, 12, 12, 4, 2, 1, 1),  # even kernel
    (1, 2, 2, 9, 9, 5, 4, 0, 1),  # stride 4 with no padding: positions no tap reaches
]
GROUPED = [
    # (B, C_in, C_out, H, W, k, stride, padding, dilation, groups)
    (2, 4, 6, 8, 8, 3, 1, 1, 1, 2),
    (2, 6, 6, 9, 9, 3, 2, 1, 1, 6),  # depthwise, stride 2 (MobileNet)
    (2, 4, 8, 10, 10, 5, 2, 2, 1, 4),  # depth multiplier 2
]


def setup(case, dtype=torch.float64, seed=0, groups=1):
    b, ci, co, h, w, k, s, p, d = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, ci, h, w, dtype=dtype, generator=g, requires_grad=True)
    kk = (k, k) if isinstance(k, int) else k
    weight = torch.randn(co, ci // groups, *kk, dtype=dtype, generator=g)
    out = F.conv2d(x, weight, stride=s, padding=p, dilation=d, groups=groups)
    grad_out = torch.randn(out.shape, dtype=dtype, generator=g)
    return x, weight, out, grad_out, (s, p, d)


def autograd_maps(x, weight, grad_out, s, p, d, groups=1):
    """Every LG^{c1->c2} by autograd, independently of the transposed convolution: the input gradient
    of <G[c1], conv(x)[c1]>, one output channel at a time; (B, C_out, C_in/groups, H_in, W_in)."""
    co, cig = weight.shape[:2]
    maps = []
    for c1 in range(co):
        mask = torch.zeros_like(grad_out)
        mask[:, c1] = grad_out[:, c1]
        out = F.conv2d(x, weight, stride=s, padding=p, dilation=d, groups=groups)
        (gx,) = torch.autograd.grad(out, x, mask)
        group = c1 // (co // groups)
        maps.append(gx[:, group * cig : (group + 1) * cig])
    return torch.stack(maps, 1)


@pytest.mark.parametrize("case", GROUPED, ids=[str(c) for c in GROUPED])
def test_grouped_convolutions_match_autograd(case):
    *geometry, groups = case
    x, weight, _, grad_out, (s, p, d) = setup(tuple(geometry), groups=groups)
    size = tuple(x.shape[-2:])
    ref = autograd_maps(x, weight, grad_out, s, p, d, groups)
    maps = explicit_maps(grad_out, weight, size, s, p, d, groups)
    assert torch.allclose(maps, ref, rtol=1e-12, atol=1e-12)
    q = local_gradient_sq_norms(grad_out, weight, size, s, p, d, groups)
    assert torch.allclose(q, ref.flatten(3).pow(2).sum(3), rtol=1e-10, atol=0)
    norms = ref.flatten(3).norm(dim=3)  # (B, C_out, C_in/groups)
    em, ab = emission_absorption(grad_out, weight, size, s, p, d, groups)
    co, ci = weight.shape[0], x.shape[1]
    ab_ref = torch.zeros(x.shape[0], ci, dtype=norms.dtype)
    for c1 in range(co):  # absorption: each input channel sums the output channels of its group
        group = c1 // (co // groups)
        ab_ref[:, group * weight.shape[1] : (group + 1) * weight.shape[1]] += norms[:, c1]
    assert torch.allclose(em, norms.sum(2), rtol=1e-10, atol=0) and torch.allclose(ab, ab_ref, rtol=1e-10, atol=0)
    assert all(
        torch.allclose(u, v, rtol=1e-10, atol=0)
        for u, v in zip((em, ab), emission_absorption_explicit(grad_out, weight, size, s, p, d, groups))
    )


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_quadratic_form_matches_explicit_maps_and_autograd(case):
    x, weight, out, grad_out, (s, p, d) = setup(case)
    size = tuple(x.shape[-2:])
    maps = explicit_maps(grad_out, weight, size, s, p, d)
    # the reference itself: summing the local gradients over c1 gives autograd's input gradient,
    # and each map is autograd's gradient of one output channel
    (autograd,) = torch.autograd.grad(out, x, grad_out)
    assert torch.allclose(maps.sum(1), autograd, rtol=1e-12, atol=1e-12)
    assert torch.allclose(maps, autograd_maps(x, weight, grad_out, s, p, d), rtol=1e-12, atol=1e-12)
    # per-pair squared norms, to 1e-10 relative
    q = local_gradient_sq_norms(grad_out, weight, size, s, p, d)
    ref = maps.flatten(3).pow(2).sum(3)
    assert torch.allclose(q, ref, rtol=1e-10, atol=0), (q - ref).abs().max()
    em, ab = emission_absorption(grad_out, weight, size, s, p, d)
    em_ref, ab_ref = emission_absorption_explicit(grad_out, weight, size, s, p, d)
    assert em.shape == (x.shape[0], weight.shape[0]) and ab.shape == (x.shape[0], weight.shape[1])
    assert torch.allclose(em, em_ref, rtol=1e-10, atol=0) and torch.allclose(ab, ab_ref, rtol=1e-10, atol=0)


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
    with pytest.raises(ValueError, match="groups=3 does not divide"):
        emission_absorption(grad_out, weight, (5, 5), padding=1, groups=3)
    with pytest.raises(ValueError, match="channels"):
        emission_absorption(torch.randn(1, 3, 5, 5), weight, (5, 5), padding=1)


@pytest.mark.parametrize(
    ("k", "d", "padding"), [(3, 1, "same"), (4, 1, "same"), (4, 2, "same"), (5, 1, "valid"), (3, 1, (2, 0))]
)
def test_conv_geometry_of_a_module_matches_autograd(k, d, padding):
    """padding='same' with an even kernel pads one more after than before (PyTorch's rule); the
    geometry read from the module gives autograd's maps."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, k, padding=padding, dilation=d, bias=False).double()
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    s, p, dil, groups = conv_geometry(conv)
    w = conv.weight.detach()
    ref = autograd_maps(x, w, grad_out, s, conv.padding if isinstance(conv.padding, tuple) else padding, dil)
    q = local_gradient_sq_norms(grad_out, w, (9, 8), s, p, dil, groups)
    assert torch.allclose(q, ref.flatten(3).pow(2).sum(3), rtol=1e-10, atol=0)


def test_conv_geometry_refuses_other_padding_modes():
    with pytest.raises(ValueError, match="padding_mode 'reflect'"):
        conv_geometry(torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
