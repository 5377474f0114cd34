"""Time mmbilevel's FFNN against a plain PyTorch MLP and bregmanet, and the Figure 5 run.

Usage (from the repository root)::

    .venv/bin/python -m bench.run                 # mmbilevel and plain PyTorch
    .venv-bench/bin/python -m bench.run           # also bregmanet (bench/setup_bregmanet.sh)
    .venv/bin/python -m bench.run --figure5       # also time the full Figure 5 reproduction

Method: each figure is the median over ``--rounds`` rounds. In a round every
model of a row is timed once, one after the other, with
``torch.utils.benchmark.Timer.blocked_autorange`` (its median over blocks of
runs, after a warm-up call). Ratios are taken between models of the same
round, then their median over the rounds is reported, so that load from
other processes during one round affects both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
from torch.utils.benchmark import Timer
from torch.utils.benchmark.utils.timer import timer as benchmark_timer

import mmbilevel
from mmbilevel.cli.argtypes import positive_int
from bench.models import (
    PLAIN_ACTIVATIONS,
    SHAPES,
    Shape,
    UnfusedBregman,
    bregmanet_model,
    bregmanet_version,
    forward_only,
    mmbilevel_model,
    plain_mlp,
    train_step,
)
from mmbilevel.nn import to_domain

__all__ = ["main"]

BASELINE = "plain"


@dataclass
class Row:
    """Timings of every model for one shape, device and mode, one list entry per round."""

    shape: str
    device: str
    mode: str
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, name: str, reference: str) -> float:
        """Return the median over rounds of this model's time divided by the reference's."""
        pairs = zip(self.seconds[name], self.seconds[reference])
        return statistics.median(mine / theirs for mine, theirs in pairs)


def machine_description() -> dict[str, str]:
    """Return the CPU model, core count, OS, Python and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    description = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "load average (1 min)": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "mmbilevel": mmbilevel.__version__ if hasattr(mmbilevel, "__version__") else _package_version("mmbilevel"),
        "bregmanet": bregmanet_version() or "not installed",
    }
    if torch.cuda.is_available():
        description["cuda device"] = torch.cuda.get_device_name(0)
    return description


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def build_models(shape: Shape, activation: str, device: torch.device, with_bregmanet: bool) -> dict[str, torch.nn.Module]:
    """Return every model compared on one row, the plain MLP first."""
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {BASELINE: plain_mlp(shape, activation, device)}
    for variant in ("standard", "euclidean", "bregman"):
        models[variant] = mmbilevel_model(shape, activation, variant, device)
    models["bregman-unfused"] = UnfusedBregman(mmbilevel_model(shape, activation, "bregman", device))
    if with_bregmanet:
        models["bregmanet-standard"] = bregmanet_model(shape, activation, "standard", device)
        models["bregmanet-bregman"] = bregmanet_model(shape, activation, "bregman", device)
    return models


def time_row(
    shape: Shape,
    activation: str,
    device: torch.device,
    with_bregmanet: bool,
    rounds: int,
    min_run_time: float,
    clock: Callable[[], float],
) -> list[Row]:
    """Time the training step and the forward pass of every model of one shape, interleaved by round."""
    models = build_models(shape, activation, device, with_bregmanet)
    generator = torch.Generator().manual_seed(1)
    inputs = to_domain(torch.rand(shape.batch, shape.in_features, generator=generator), activation).to(device)
    labels = torch.randint(0, shape.out_features, (shape.batch,), generator=generator).to(device)

    closures: dict[str, dict[str, Callable[[], object]]] = {"train step": {}, "forward": {}}
    for name, model in models.items():
        closures["train step"][name] = train_step(model, inputs, labels)
        closures["forward"][name] = forward_only(model, inputs)

    rows = []
    for mode, by_model in closures.items():
        row = Row(shape.name, str(device), mode, {name: [] for name in by_model})
        for function in by_model.values():
            function()
        for _ in range(rounds):
            for name, function in by_model.items():
                timer = Timer("function()", globals={"function": function}, timer=clock)
                row.seconds[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
        rows.append(row)
    return rows


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown_table(rows: list[Row]) -> str:
    """Return the timings as a Markdown table: median time and ratio to the plain MLP per model."""
    names = list(rows[0].seconds)
    header = "| shape | device | mode | " + " | ".join(names) + " |"
    lines = [header, "|" + " --- |" * (3 + len(names))]
    for row in rows:
        cells = []
        for name in names:
            text = format_time(row.median(name))
            if name != BASELINE:
                text += f" ({row.ratio(name, BASELINE):.2f}×)"
            cells.append(text)
        lines.append(f"| {row.shape} | {row.device} | {row.mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bregmanet_table(rows: list[Row]) -> str:
    """Return bregmanet's time divided by ours for the same variant (above 1: ours is faster)."""
    lines = [
        "| shape | device | mode | standard: bregmanet / ours | bregman: bregmanet / ours |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [f"{row.ratio(f'bregmanet-{variant}', variant):.2f}×" for variant in ("standard", "bregman")]
        lines.append(f"| {row.shape} | {row.device} | {row.mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_figure5(python: str, out: Path, extra: list[str], threads: int | None) -> float:
    """Run the full two-spiral Figure 5 reproduction in a subprocess and return its wall time in seconds.

    ``threads``, when given, sets OMP_NUM_THREADS of the subprocess; else it
    inherits this process's environment.
    """
    command = [python, "-m", "mmbilevel", "reproduce", "two-spiral", "--figures", "fig5", "--out", str(out), *extra]
    environment = dict(os.environ)
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    prefix = f"OMP_NUM_THREADS={threads} " if threads is not None else ""
    print(f"running: {prefix}{' '.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of seconds > 0")
    return value


def _device_list(text: str) -> list[str]:
    """Parse ``--devices``: a comma-separated subset of cpu and cuda, cuda only when available."""
    names = list(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in ("cpu", "cuda")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid devices {text!r}; expected a comma-separated subset of cpu, cuda"
        )
    if "cuda" in names and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            "cuda is not available on this machine (torch.cuda.is_available() is False); use --devices cpu"
        )
    return names


def _default_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(shape.name for shape in SHAPES),
                        help="comma-separated rows to time (default: all: %(default)s)")
    parser.add_argument("--activation", choices=sorted(PLAIN_ACTIVATIONS), default="arctan",
                        help="activation of every model (default arctan)")
    parser.add_argument("--devices", type=_device_list, default=None,
                        help="comma-separated devices to time, from cpu and cuda; asking for cuda without "
                             "CUDA is an error (default: cpu, and cuda when available)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads, >= 1 (default 1)")
    parser.add_argument("--rounds", type=positive_int, default=15,
                        help="interleaved rounds per row, >= 1 (default 15)")
    parser.add_argument("--min-run-time", type=_positive_seconds, default=0.05,
                        help="seconds of runs per model and round, > 0 (default 0.05)")
    parser.add_argument("--large-rounds", type=positive_int, default=5,
                        help="rounds for the rows wider than 1000, >= 1 (default 5)")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                        help="cpu: CPU time of the timing thread, which excludes time when other processes "
                             "hold the core; wall: elapsed time; auto (default): cpu for one CPU thread and "
                             "no CUDA device, else wall")
    parser.add_argument("--no-bregmanet", action="store_true", help="skip bregmanet even when installed")
    parser.add_argument("--figure5", action="store_true",
                        help="also time `mmbilevel reproduce two-spiral --figures fig5` (defaults of the paper)")
    parser.add_argument("--figure5-args", default="",
                        help="extra arguments of the Figure 5 command, one string (default none)")
    parser.add_argument("--figure5-threads", type=positive_int, default=None,
                        help="OMP_NUM_THREADS of the Figure 5 run (default: inherit the environment)")
    parser.add_argument("--figure5-out", type=Path, default=Path("runs/bench-figure5"),
                        help="output folder of the Figure 5 run (default runs/bench-figure5)")
    parser.add_argument("--json", type=Path, default=None, help="also write every timing to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    by_name = {shape.name: shape for shape in SHAPES}
    unknown = [name for name in arguments.shapes.split(",") if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown shapes {unknown}; choose from {sorted(by_name)}")
    shapes = [by_name[name] for name in arguments.shapes.split(",")]
    devices = [torch.device(name) for name in arguments.devices or _default_devices()]
    with_bregmanet = bregmanet_version() is not None and not arguments.no_bregmanet
    clock_name = arguments.clock
    if clock_name == "auto":
        on_cpu_only = all(device.type == "cpu" for device in devices)
        clock_name = "cpu" if arguments.threads == 1 and on_cpu_only else "wall"
    if clock_name == "cpu" and any(device.type != "cpu" for device in devices):
        raise SystemExit("--clock cpu cannot time CUDA kernels; use --clock wall with --devices cuda")
    # torch's default benchmark timer synchronizes CUDA before reading the wall clock.
    clock = time.thread_time if clock_name == "cpu" else benchmark_timer

    print("## Machine and versions\n")
    machine = machine_description()
    for key, value in machine.items():
        print(f"- {key}: {value}")
    print(f"- command: {' '.join([Path(sys.executable).name, '-m', 'bench.run', *(argv or sys.argv[1:])])}")
    print(f"- activation: {arguments.activation}, dtype float32, SGD step, cross-entropy loss")
    print(f"- clock: {clock_name} ({'CPU time of the timing thread' if clock_name == 'cpu' else 'wall time'})\n",
          flush=True)

    rows: list[Row] = []
    for device in devices:
        for shape in shapes:
            rounds = arguments.large_rounds if shape.in_features > 1000 else arguments.rounds
            rows += time_row(
                shape, arguments.activation, device, with_bregmanet, rounds, arguments.min_run_time, clock
            )
            print(f"timed {shape.name} on {device}", file=sys.stderr, flush=True)

    print("## Median times, ratio to the plain MLP in brackets\n")
    print(markdown_table(rows))
    if with_bregmanet:
        print("\n## Speed-up over bregmanet 1.0.0\n")
        print(bregmanet_table(rows))

    figure5_seconds = None
    if arguments.figure5:
        figure5_seconds = time_figure5(
            sys.executable, arguments.figure5_out, arguments.figure5_args.split(), arguments.figure5_threads
        )
        threads = arguments.figure5_threads if arguments.figure5_threads is not None else "inherited"
        print(f"\n## Figure 5\n\nreproduction (`reproduce two-spiral --figures fig5 {arguments.figure5_args}`, "
              f"OMP_NUM_THREADS {threads}): {figure5_seconds:.1f} s wall, startup and plots included")

    if arguments.json is not None:
        payload = {
            "machine": machine,
            "rows": [row.__dict__ for row in rows],
            "figure5_seconds": figure5_seconds,
        }
        arguments.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
