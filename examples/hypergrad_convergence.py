"""Plot the hypergradient error against the number of iterations L.

The lower level is the Bregman MM problem of ``bench/hypergrad_bench.py`` in a
smaller size: f(z) = ½zᵀAz + dᵀz, A = εI + MᵀM/n, on (−1, 1)ⁿ with the
Bregman majorant of the tanh Legendre function, θ = (M, d). For each L the
script computes

- the unrolled hypergradient through L MM iterations (iterative
  differentiation), and
- the implicit hypergradient after L forward iterations with L iterations of
  the adjoint fixed-point solve, or L iterations of conjugate gradient on the
  normal equations (approximate implicit differentiation),

and plots their relative error against a reference solved to 1e-13, in the
manner of Grazzi et al. (2020), "On the iteration complexity of hypergradient
computation". Both fixed-point variants converge at the linear rate of the MM
map. Conjugate gradient converges faster in the adjoint solve, but the L
forward iterations limit its accuracy.

Run: ``python examples/hypergrad_convergence.py`` (writes
``docs/img/hypergrad_error_vs_depth.png``).
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mmbilevel import legendre  # noqa: E402
from mmbilevel.hypergrad import hypergrad  # noqa: E402
from mmbilevel.majorants import BregmanMajorant, QuadraticForm  # noqa: E402
from mmbilevel.mm import MMSolver  # noqa: E402
from mmbilevel.prox import Zero  # noqa: E402

DTYPE = torch.float64


def build(dim: int, batch: int, ridge: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    M = (torch.randn(dim, dim, dtype=DTYPE, generator=generator) / math.sqrt(dim)).requires_grad_(True)
    d = (0.3 * ridge * torch.randn(dim, dtype=DTYPE, generator=generator)).requires_grad_(True)
    starts = 0.5 * torch.rand(batch, dim, dtype=DTYPE, generator=generator) - 0.25
    target = 0.2 * torch.randn(dim, dtype=DTYPE, generator=generator)
    phi = legendre.get("tanh")

    def solver(depth: int) -> MMSolver:
        gram = M.T @ M / dim
        A = ridge * torch.eye(dim, dtype=DTYPE) + 0.5 * (gram + gram.T)
        form = QuadraticForm(A, torch.zeros_like(A), d)
        return MMSolver(BregmanMajorant(form, phi, 0.9 / form.smoothness), Zero(), depth)

    def upper_loss(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - target).square().sum(-1).mean()

    return solver, starts, upper_loss, [M, d]


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=20, help="dimension n of each lower-level problem")
    parser.add_argument("--batch", type=int, default=16, help="number of lower-level problems")
    parser.add_argument("--ridge", type=float, default=0.02, help="ε in A = εI + MᵀM/n")
    parser.add_argument("--max-depth", type=int, default=400, help="largest L")
    parser.add_argument("--points", type=int, default=25, help="number of depths between 1 and --max-depth")
    parser.add_argument("--output", default="docs/img/hypergrad_error_vs_depth.png", help="PNG file to write")
    args = parser.parse_args()

    solver, starts, upper_loss, params = build(args.dim, args.batch, args.ridge, seed=0)
    exact = flat(
        hypergrad(
            solver(1), starts, upper_loss, params, "implicit",
            forward_tol=1e-13, forward_maxiter=200_000, tol=1e-13, maxiter=200_000,
        ).grads
    )

    depths = sorted({max(1, round(k * args.max_depth / (args.points - 1))) for k in range(args.points)})
    curves: dict[str, list[float]] = {"unrolled": [], "implicit, fixed-point adjoint": [], "implicit, CG adjoint": []}
    for depth in depths:
        unrolled = flat(hypergrad(solver(depth), starts, upper_loss, params, "unrolled").grads)
        curves["unrolled"].append(float((unrolled - exact).norm() / exact.norm()))
        for label, linear_solver in (("implicit, fixed-point adjoint", "fixed_point"), ("implicit, CG adjoint", "normal_cg")):
            with warnings.catch_warnings():
                # L iterations each, tolerance 0: the error at fixed work is what is plotted.
                warnings.simplefilter("ignore", RuntimeWarning)
                implicit = hypergrad(
                    solver(1), starts, upper_loss, params, "implicit",
                    forward_tol=0.0, forward_maxiter=depth, tol=0.0, maxiter=depth,
                    linear_solver=linear_solver, on_failure="warn",
                )
            curves[label].append(float((flat(implicit.grads) - exact).norm() / exact.norm()))
        print(depth, *(f"{values[-1]:.2e}" for values in curves.values()), flush=True)

    figure, axis = plt.subplots(figsize=(6, 4))
    for (label, values), marker in zip(curves.items(), "osd"):
        axis.semilogy(depths, [max(v, 1e-17) for v in values], marker=marker, markersize=3, label=label)
    # A linear L axis shows linear convergence (error ∝ qᴸ) as a straight line.
    axis.set_xlabel("iterations L (forward; and adjoint for implicit)")
    axis.set_ylabel("relative hypergradient error")
    axis.set_title("Hypergradient error against L, Bregman MM lower level")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
