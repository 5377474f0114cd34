"""Time and peak memory of one hypergradient against the depth L, per method.

The lower level is a Bregman MM problem: f(z) = ½zᵀAz + dᵀz with
A = εI + MᵀM/n (ε = 0.01 by default: along the slowest direction the MM map
contracts at a rate of about 1 − 0.9ε/‖A‖ ≈ 0.998, so L matters between 10
and 1000), minimized on (−1, 1)ⁿ with the Bregman majorant of the tanh
Legendre function (MM map z ↦ tanh(artanh z − τ(Az + d))), for a batch of
starting points. The parameters are θ = (M, d); the upper loss is
E = ½‖z − t‖² averaged over the batch.

Methods, for each L:

- ``unrolled``: backpropagation through L iterations;
- ``checkpointed``: the same with ⌊√L⌋ checkpoint segments;
- ``implicit``: L forward iterations without autograd, then at most L
  iterations of the adjoint fixed-point solve, so that its accuracy matches
  the L-step methods (both errors decay like the contraction rate to the L).

Accuracy is the relative error against a reference hypergradient (implicit,
solved to 1e-13 in float64, to the default tolerance in float32). Time is the median wall time of ``--repeats`` runs. Peak
memory is measured

- on CUDA, by ``torch.cuda.max_memory_allocated`` above the level at entry;
- on CPU, with ``torch.profiler`` (``profile_memory=True``): the running sum of
  every recorded operator's own allocations minus frees, in start-time order,
  and its maximum above the level at entry. This counts every tensor allocated
  during the hypergradient (saved graph tensors, recomputed segments, adjoint
  iterates), at operator granularity.

Run: ``python bench/hypergrad_bench.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from mmbilevel import legendre
from mmbilevel.hypergrad import default_tolerance, hypergrad
from mmbilevel.majorants import BregmanMajorant, QuadraticForm
from mmbilevel.mm import MMSolver
from mmbilevel.prox import Zero


class Problem:
    """Bregman quadratic lower level with parameters θ = (M, d) and a fixed batch of starts."""

    def __init__(
        self, batch: int, dim: int, ridge: float, device: torch.device, dtype: torch.dtype, seed: int = 0
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.ridge = ridge
        self.M = (torch.randn(dim, dim, dtype=torch.float64, generator=generator) / math.sqrt(dim)).to(device, dtype)
        # Scaled with ε so that z* = −A⁻¹d stays well inside (−1, 1)ⁿ.
        self.d = (0.3 * ridge * torch.randn(dim, dtype=torch.float64, generator=generator)).to(device, dtype)
        self.M.requires_grad_(True)
        self.d.requires_grad_(True)
        self.starts = (0.5 * torch.rand(batch, dim, dtype=torch.float64, generator=generator) - 0.25).to(device, dtype)
        self.target = (0.2 * torch.randn(dim, dtype=torch.float64, generator=generator)).to(device, dtype)
        self.phi = legendre.get("tanh")

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.M, self.d]

    def solver(self, depth: int) -> MMSolver:
        eye = torch.eye(self.dim, dtype=self.M.dtype, device=self.M.device)
        gram = self.M.T @ self.M / self.dim
        A = self.ridge * eye + 0.5 * (gram + gram.T)
        form = QuadraticForm(A, torch.zeros_like(A), self.d)
        step = 0.9 / form.smoothness
        return MMSolver(BregmanMajorant(form, self.phi, step), Zero(), depth)

    def upper_loss(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - self.target).square().sum(-1).mean()


def run_method(problem: Problem, method: str, depth: int) -> torch.Tensor:
    """Compute one hypergradient and return it flattened."""
    solver = problem.solver(depth)
    if method == "unrolled":
        result = hypergrad(solver, problem.starts, problem.upper_loss, problem.params, "unrolled")
    elif method == "checkpointed":
        result = hypergrad(
            solver, problem.starts, problem.upper_loss, problem.params, "unrolled", checkpointing=True
        )
    elif method == "implicit":
        with warnings.catch_warnings():
            # Exactly L forward and at most L adjoint iterations: the unmet
            # tolerance 0 is the point of the comparison, so its warning is muted.
            warnings.simplefilter("ignore", RuntimeWarning)
            result = hypergrad(
                solver,
                problem.starts,
                problem.upper_loss,
                problem.params,
                "implicit",
                forward_tol=0.0,
                forward_maxiter=depth,
                tol=0.0,
                maxiter=depth,
                on_failure="warn",
            )
    else:
        raise ValueError(f"unknown method {method!r}")
    return torch.cat([g.reshape(-1) for g in result.grads])


def reference(problem: Problem) -> torch.Tensor:
    # 1e-13 is out of reach in float32, where the default tolerance ε^¾ ≈ 6e-6 is used.
    tol = 1e-13 if problem.d.dtype == torch.float64 else default_tolerance(problem.d.dtype)
    result = hypergrad(
        problem.solver(1),
        problem.starts,
        problem.upper_loss,
        problem.params,
        "implicit",
        forward_tol=tol,
        forward_maxiter=100_000,
        tol=tol,
        maxiter=100_000,
    )
    return torch.cat([g.reshape(-1) for g in result.grads])


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Return the peak bytes allocated while ``fn`` runs, above the level at entry."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda event: event.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def wall_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 50, 200, 1000], help="depths L to measure")
    parser.add_argument("--methods", nargs="+", default=["unrolled", "checkpointed", "implicit"], help="methods to measure")
    parser.add_argument("--batch", type=int, default=128, help="number of lower-level problems")
    parser.add_argument("--dim", type=int, default=64, help="dimension n of each problem")
    parser.add_argument("--ridge", type=float, default=0.01, help="ε in A = εI + MᵀM/n; smaller contracts slower")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    parser.add_argument("--device", default="cpu", help="torch device, for example cpu or cuda")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="floating dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", default=None, help="optional JSON file for the results")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    problem = Problem(args.batch, args.dim, args.ridge, device, dtype)
    exact = reference(problem)

    rows = []
    print(
        f"# device={device} dtype={args.dtype} batch={args.batch} dim={args.dim} ridge={args.ridge} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"# python {platform.python_version()}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| L | method | time (ms) | peak memory (MiB) | relative error |")
    print("|---:|---|---:|---:|---:|")
    for depth in args.depths:
        for method in args.methods:
            grad = run_method(problem, method, depth)
            error = float(torch.linalg.vector_norm(grad - exact) / torch.linalg.vector_norm(exact))
            seconds = wall_time(lambda: run_method(problem, method, depth), device, args.repeats)
            memory = peak_memory(lambda: run_method(problem, method, depth), device)
            rows.append({"depth": depth, "method": method, "time_s": seconds, "peak_bytes": memory, "relative_error": error})
            print(f"| {depth} | {method} | {1e3 * seconds:.1f} | {memory / 2**20:.2f} | {error:.2e} |", flush=True)

    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump({"device": str(device), "dtype": args.dtype, "batch": args.batch, "dim": args.dim, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
