"""B2: emission/absorption: explicit maps, the previous quadratic form and the current one.

    python -m benchmarks.emission_absorption [--device cuda] [--quick] [--resnet-only]

Part 1, conv shapes: the same inputs for the three methods in one run; times, ratios and the
largest relative difference to the explicit maps.

Part 2, ResNet-18 (torchvision, 224 x 224, 10 classes): one gradient batch of random inputs
(forward, backward, the gradient recorder of every conv layer), then emission/absorption of its
20 conv layers by the previous and the current method, side by side: seconds per input, per
layer and in all, and the largest relative difference between the two.

The previous method (``previous_sq_norms``, the project at bd1c948) is kept here verbatim as the
baseline: every tap of the stride-dilated G unfolded by im2col, M = P P^T over the whole input
plane, and w^T M w as (M @ w) * w. The current one (``dnndist.gradients``) splits strided
convolutions into stride-1 phases, copies the offset maps with one strided view, and takes the
quadratic forms as one batched matrix product over the K(K+1)/2 distinct entries of M.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dnndist.gradients import emission_absorption, emission_absorption_explicit

# (B, C_in, C_out, H_in, W_in, k, stride, padding)
SHAPES = [
    (64, 16, 16, 32, 32, 3, 1, 1),
    (64, 64, 64, 56, 56, 3, 1, 1),
    (32, 256, 256, 14, 14, 3, 1, 1),
    (32, 512, 512, 7, 7, 3, 1, 1),
    (32, 128, 256, 28, 28, 3, 2, 1),  # ResNet stage transition
    (16, 3, 64, 224, 224, 7, 2, 3),  # ResNet stem
]
QUICK = [SHAPES[0], SHAPES[2], SHAPES[4]]


def _previous_offset_maps(grad_output, kernel, input_size, stride, padding, dilation):  # noqa: ANN001, ANN202
    b, c, ho, wo = grad_output.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (hi, wi) = kernel, stride, padding, dilation, input_size
    up = grad_output
    if sh > 1 or sw > 1:
        up = grad_output.new_zeros(b, c, (ho - 1) * sh + 1, (wo - 1) * sw + 1)
        up[:, :, ::sh, ::sw] = grad_output
    top, left = (kh - 1) * dh - ph, (kw - 1) * dw - pw
    bottom = hi + (kh - 1) * dh - top - up.shape[2]
    right = wi + (kw - 1) * dw - left - up.shape[3]
    padded = F.pad(up, (left, right, top, bottom))
    cols = F.unfold(padded, (kh, kw), dilation=(dh, dw))
    return cols.view(b, c, kh * kw, hi * wi)


def previous_sq_norms(grad_output, weight, input_size, stride, padding, dilation=(1, 1), max_bytes=32 << 20):  # noqa: ANN001, ANN201
    """The previous method (bd1c948), verbatim but for names: the baseline of this benchmark."""
    b, co = grad_output.shape[:2]
    ci, kh, kw = weight.shape[1:]
    hi, wi = input_size
    w = weight.flip(-2, -1).reshape(co, ci, kh * kw).to(grad_output.dtype)
    per_channel = b * kh * kw * hi * wi * grad_output.element_size()
    step = max(1, min(co, max_bytes // max(per_channel, 1)))
    out = grad_output.new_empty(b, co, ci)
    for start in range(0, co, step):
        stop = min(co, start + step)
        p = _previous_offset_maps(grad_output[:, start:stop], (kh, kw), (hi, wi), stride, padding, dilation)
        m = p @ p.transpose(-1, -2)
        wt = w[start:stop].transpose(1, 2)
        out[:, start:stop] = ((m @ wt) * wt).sum(-2)
    return out.clamp_(min=0)


def previous_emission_absorption(grad_output, weight, input_size, stride, padding, dilation=(1, 1)):  # noqa: ANN001, ANN201
    norms = previous_sq_norms(grad_output, weight, input_size, stride, padding, dilation).sqrt_()
    return norms.sum(2), norms.sum(1)


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rel(got: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...]) -> float:
    return max(((g - r).abs() / r.abs().clamp_min(1e-30)).max().item() for g, r in zip(got, ref))


def shapes(device: torch.device, quick: bool, repeat: int) -> None:
    print(
        f"{'shape (B, Cin->Cout, HxW, k, stride)':<40} {'explicit':>10} {'previous':>10} {'current':>10}"
        f" {'vs explicit':>11} {'vs previous':>11} {'max rel diff':>13}"
    )
    for b, ci, co, h, w, k, s, pad in QUICK if quick else SHAPES:
        g = torch.Generator(device=device).manual_seed(0)
        ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        grad = torch.randn(b, co, ho, wo, device=device, generator=g)
        weight = torch.randn(co, ci, k, k, device=device, generator=g)
        t_exp, ref = timed(lambda: emission_absorption_explicit(grad, weight, (h, w), s, pad), device, repeat)
        t_prev, _ = timed(
            lambda: previous_emission_absorption(grad, weight, (h, w), (s, s), (pad, pad)), device, repeat
        )
        t_now, now = timed(lambda: emission_absorption(grad, weight, (h, w), s, pad), device, repeat)
        label = f"B={b}, {ci}->{co}, {h}x{w}, {k}x{k}, s{s}"
        print(
            f"{label:<40} {t_exp * 1e3:>8.1f}ms {t_prev * 1e3:>8.1f}ms {t_now * 1e3:>8.1f}ms"
            f" {t_exp / t_now:>10.1f}x {t_prev / t_now:>10.1f}x {_rel(now, ref):>13.1e}"
        )


def resnet18(device: torch.device, batch: int, repeat: int) -> None:
    import torchvision

    from dnndist import extract
    from dnndist.analysis import layer_specs

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    convs = [s for s in layer_specs(model) if s.kind == "conv"]
    modules = dict(model.named_modules())
    rec, grads = extract.gradient_recorder(model, {s.name for s in convs})
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        grads.clear()
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()

    t_fb, _ = timed(forward_backward, device, repeat)
    rows, total_prev, total_now, worst = [], 0.0, 0.0, 0.0
    for s in convs:
        conv = modules[s.name]
        args = (grads[s.name], conv.weight.detach(), tuple(rec.inputs[s.name].shape[-2:]))
        geometry = (conv.stride, conv.padding, conv.dilation)
        t_prev, prev = timed(lambda: previous_emission_absorption(*args, *geometry), device, repeat)  # noqa: B023
        t_now, now = timed(lambda: emission_absorption(*args, *geometry), device, repeat)  # noqa: B023
        total_prev, total_now, worst = total_prev + t_prev, total_now + t_now, max(worst, _rel(now, prev))
        rows.append((s.name, tuple(conv.weight.shape), t_prev, t_now))
    rec.close()
    per = 1e3 / batch
    print(f"ResNet-18, 224 x 224, batch {batch}, float32: ms per input")
    print(f"{'layer':<24} {'weight':<18} {'previous':>9} {'current':>9} {'ratio':>7}")
    for name, shape, t_prev, t_now in rows:
        print(
            f"{name:<24} {'x'.join(map(str, shape)):<18} {t_prev * per:>9.2f} {t_now * per:>9.2f} {t_prev / t_now:>6.1f}x"
        )
    print(
        f"{'emission/absorption':<43} {total_prev * per:>9.1f} {total_now * per:>9.1f} {total_prev / total_now:>6.1f}x"
    )
    before, after = t_fb + total_prev, t_fb + total_now
    print(f"{'forward + backward':<43} {t_fb * per:>9.1f} {t_fb * per:>9.1f}")
    print(f"{'the pass (s per input)':<43} {before / batch:>9.3f} {after / batch:>9.3f} {before / after:>6.1f}x")
    print(f"largest relative difference, current vs previous (float32): {worst:.1e}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--resnet-only", action="store_true")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="ResNet-18 inputs per gradient batch (default 32)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"B2 emission/absorption on {where}, float32, best of {args.repeat}")
    if not args.resnet_only:
        shapes(device, args.quick, args.repeat)
        print()
    resnet18(device, 8 if args.quick else args.batch, args.repeat)


if __name__ == "__main__":
    main()
