"""``mmbilevel demo``: solve a small lower-level MM problem and print diagnostics.

The problem is min f(z) + g(z) with a nonconvex quadratic
f(z) = ½zᵀ(A + C)z + dᵀz (A ≻ 0, C ⪯ 0, A + C indefinite) and g the indicator
of the box [0, 1]ⁿ. It is solved from a batch of random starts by MM with
the quadratic majorant (projected gradient) and with the Bregman majorant of
the Fermi–Dirac entropy, whose update is the sigmoid layer
σ(σ⁻¹(z) + Wz + b).
"""

from __future__ import annotations

import argparse

import torch

from mmbilevel.legendre import get as get_legendre
from mmbilevel.majorants import BregmanMajorant, Majorant, QuadraticForm, QuadraticMajorant
from mmbilevel.mm import MMSolver
from mmbilevel.prox import Indicator

__all__ = ["add_arguments", "run", "make_problem"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo options to ``parser``."""
    parser.add_argument("--depth", type=int, default=100, help="number of MM iterations (default 100)")
    parser.add_argument("--dim", type=int, default=8, help="dimension n of the problem (default 8)")
    parser.add_argument("--batch", type=int, default=4, help="number of random starts (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem and starts (default 0)")


def make_problem(dim: int, seed: int) -> QuadraticForm:
    """Build a random nonconvex quadratic f of dimension ``dim`` (float64)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, dtype=torch.float64, generator=gen)
    k = torch.randn(dim, dim, dtype=torch.float64, generator=gen)
    A = m @ m.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)
    C = -(k @ k.T) / dim
    d = 0.5 * torch.randn(dim, dtype=torch.float64, generator=gen)
    return QuadraticForm(A, C, d)


def _box_residual(f: QuadraticForm, z: torch.Tensor) -> float:
    """Return max over the batch of ‖z − clip(z − ∇f(z), 0, 1)‖, zero at critical points."""
    projected = torch.clamp(z - f.gradient(z), 0.0, 1.0)
    return float(torch.linalg.vector_norm(z - projected, dim=-1).max())


def run(args: argparse.Namespace) -> int:
    """Run the demo and print one line per majorant; return 0."""
    if args.dim < 1 or args.batch < 1 or args.depth < 0:
        raise SystemExit("--dim and --batch must be >= 1 and --depth >= 0")
    f = make_problem(args.dim, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = 0.05 + 0.9 * torch.rand(args.batch, args.dim, dtype=torch.float64, generator=gen)
    step = 0.9 / f.smoothness
    majorants: dict[str, Majorant] = {
        "quadratic": QuadraticMajorant(f, step),
        "bregman (sigmoid)": BregmanMajorant(f, get_legendre("sigmoid"), step),
    }

    eigenvalues = torch.linalg.eigvalsh(f.hessian)
    print(
        f"f(z) = ½zᵀHz + dᵀz on [0, 1]^{args.dim}, Hessian eigenvalues in "
        f"[{float(eigenvalues.min()):.3f}, {float(eigenvalues.max()):.3f}], step τ = {step:.4f}, "
        f"{args.batch} starts"
    )
    for name, majorant in majorants.items():
        result = MMSolver(majorant, Indicator(0.0, 1.0), depth=args.depth).solve(x)
        start = float(result.objective[0].mean())
        end = float(result.objective[-1].mean())
        print(
            f"{name:>18}: {result.iterations} iterations, mean f + g {start:.6f} -> {end:.6f}, "
            f"last step norm {float(result.step_norms[-1].max()) if result.iterations else 0.0:.2e}, "
            f"critical-point residual {_box_residual(f, result.z):.2e}"
        )
    return 0
