"""B2: emission/absorption, quadratic form vs explicit grouped conv_transpose2d maps.

    python -m benchmarks.emission_absorption [--device cuda] [--quick]

Same inputs for both methods in one run; prints times, the ratio and the largest
relative difference of the results.
"""

from __future__ import annotations

import argparse
import time

import torch

from dnndist.gradients import emission_absorption, emission_absorption_explicit

# (B, C_in, C_out, H_in, W_in, stride)
SHAPES = [
    (64, 16, 16, 32, 32, 1),
    (64, 64, 64, 56, 56, 1),
    (32, 256, 256, 14, 14, 1),
    (32, 512, 512, 7, 7, 1),
    (32, 128, 256, 28, 28, 2),  # ResNet stage transition
]
QUICK = [SHAPES[0], SHAPES[2], SHAPES[4]]


def timed(fn, device: torch.device, repeat: int) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"B2 emission/absorption on {torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu, {torch.get_num_threads()} threads'}, float32"
    )
    print(
        f"{'shape (B, Cin->Cout, HxW, stride)':<36} {'explicit':>10} {'quadratic':>10} {'ratio':>7} {'max rel diff':>13}"
    )
    for b, ci, co, h, w, s in QUICK if args.quick else SHAPES:
        g = torch.Generator(device=device).manual_seed(0)
        ho, wo = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1
        grad = torch.randn(b, co, ho, wo, device=device, generator=g)
        weight = torch.randn(co, ci, 3, 3, device=device, generator=g)
        t_exp, (em_e, ab_e) = timed(
            lambda: emission_absorption_explicit(grad, weight, (h, w), s, 1), device, args.repeat
        )
        t_q, (em_q, ab_q) = timed(lambda: emission_absorption(grad, weight, (h, w), s, 1), device, args.repeat)
        diff = max(((em_q - em_e).abs() / em_e.abs()).max().item(), ((ab_q - ab_e).abs() / ab_e.abs()).max().item())
        label = f"B={b}, {ci}->{co}, {h}x{w}, s{s}"
        print(f"{label:<36} {t_exp * 1e3:>8.1f}ms {t_q * 1e3:>8.1f}ms {t_exp / t_q:>6.1f}x {diff:>13.1e}")


if __name__ == "__main__":
    main()
