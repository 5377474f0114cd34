"""Train depth-L Bregman networks and infinite-depth Bregman models on the two spirals.

Models (arctan activation, linear head, cross-entropy):

- ``bregman-L3``: the Bregman FFNN of "Bilevel Learning of Deep
  Representations" with 3 hidden layers of 2 neurons (separate weights per layer);
- ``bregman-L10-w16``: 10 hidden Bregman layers of 16 neurons;
- ``equilibrium-w2``: the limit of the shared-weight Bregman map, input used
  only as the starting point (no injection), width 2;
- ``equilibrium-inject-w2`` / ``-w16``: the limit with input injection Ux,
  width 2 or 16, symmetric weights (‖W‖₂ ≤ 0.95, the MM setting);
- ``equilibrium-negative-inject-w16``: the same with W ≼ 0 (convex f, so the
  limit is the unique solution of a box-constrained quadratic program);
- ``equilibrium-free-inject-w16``: the same with an unconstrained W, an
  ordinary equilibrium layer without the MM convergence guarantee.

Each model is trained full batch with Adam on the 200 training points
(two_spirals()) and evaluated on 200 held-out points sampled midway between
them (two_spirals(offset=0.5)). For the equilibrium models the script also
reports the mean number of forward iterations, the share of forward solves
that reached the tolerance, and how many distinct representations the
training points get (rounded to 1e-3). Training caps the forward solve at
1000 iterations. After training, the accuracy is measured again with a cap of
``--limit-maxiter`` iterations, closer to the exact limit, together with
whether that solve converged.

Run: ``python examples/equilibrium_spirals.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from torch.nn import functional

from mmbilevel.data.spiral import two_spirals
from mmbilevel.nn import FFNN
from mmbilevel.nn.equilibrium import BregmanEquilibriumModel

MODELS = {
    "bregman-L3": lambda: FFNN(2, [2, 2, 2], 2, "arctan", "bregman"),
    "bregman-L10-w16": lambda: FFNN(2, [16] * 10, 2, "arctan", "bregman"),
    "equilibrium-w2": lambda: BregmanEquilibriumModel(
        2, 2, 2, "arctan", injection=False, weight="symmetric", on_failure="warn"
    ),
    "equilibrium-inject-w2": lambda: BregmanEquilibriumModel(
        2, 2, 2, "arctan", injection=True, weight="symmetric", on_failure="warn"
    ),
    "equilibrium-inject-w16": lambda: BregmanEquilibriumModel(
        2, 16, 2, "arctan", injection=True, weight="symmetric", on_failure="warn"
    ),
    "equilibrium-negative-inject-w16": lambda: BregmanEquilibriumModel(
        2, 16, 2, "arctan", injection=True, weight="negative", on_failure="warn"
    ),
    "equilibrium-free-inject-w16": lambda: BregmanEquilibriumModel(
        2, 16, 2, "arctan", injection=True, weight="free", on_failure="warn"
    ),
}


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).double().mean())


def train(name: str, seed: int, steps: int, lr: float, limit_maxiter: int = 20_000) -> dict:
    torch.manual_seed(seed)
    x, y = two_spirals(dtype=torch.float64)
    x_test, y_test = two_spirals(offset=0.5, dtype=torch.float64)
    model = MODELS[name]().double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    equilibrium = getattr(model, "equilibrium", None)
    iterations, converged = [], []

    start = time.perf_counter()
    with warnings.catch_warnings():
        # Unconverged forward solves are counted below instead of printed.
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if equilibrium is not None:
                iterations.append(equilibrium.last_result.iterations)
                converged.append(equilibrium.last_result.converged)
        seconds = time.perf_counter() - start

        result = {
            "model": name,
            "seed": seed,
            "loss": float(loss.detach()),
            "train_accuracy": accuracy(model, x, y),
            "test_accuracy": accuracy(model, x_test, y_test),
            "seconds": seconds,
        }
        if equilibrium is not None:
            with torch.no_grad():
                features = model.features(x)
            result["distinct_representations"] = int(torch.unique(torch.round(features * 1000), dim=0).shape[0])
            result["mean_iterations"] = statistics.mean(iterations)
            result["converged_share"] = sum(converged) / len(converged)

            equilibrium.maxiter = limit_maxiter
            result["limit_train_accuracy"] = accuracy(model, x, y)
            train_converged = equilibrium.last_result.converged
            result["limit_test_accuracy"] = accuracy(model, x_test, y_test)
            test_converged = equilibrium.last_result.converged
            result["limit_converged"] = float(train_converged and test_converged)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to train")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per model")
    parser.add_argument("--steps", type=int, default=300, help="full-batch Adam steps")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    parser.add_argument("--limit-maxiter", type=int, default=20_000, help="forward cap of the evaluation after training")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", default=None, help="optional JSON file for the per-run results")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    runs = []
    for name in args.models:
        for seed in range(args.seeds):
            runs.append(train(name, seed, args.steps, args.lr, args.limit_maxiter))
            print(json.dumps(runs[-1]), flush=True)

    print(
        "| model | train accuracy | test accuracy | distinct z* | forward iterations | converged "
        "| limit train accuracy | limit test accuracy | limit converged | time per run (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        rows = [run for run in runs if run["model"] == name]

        def summary(key: str, digits: int = 3) -> str:
            values = [row[key] for row in rows if key in row]
            if not values:
                return "–"
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

        print(
            f"| {name} | {summary('train_accuracy')} | {summary('test_accuracy')} | "
            f"{summary('distinct_representations', 0)} | {summary('mean_iterations', 0)} | "
            f"{summary('converged_share', 2)} | {summary('limit_train_accuracy')} | "
            f"{summary('limit_test_accuracy')} | {summary('limit_converged', 2)} | {summary('seconds', 1)} |"
        )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(runs, handle, indent=2)


if __name__ == "__main__":
    main()
