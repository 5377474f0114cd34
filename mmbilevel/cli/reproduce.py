"""``mmbilevel reproduce``: the figures and tables of "Bilevel Learning of Deep Representations".

Subcommands:

- ``two-spiral``: Figures 4, 5 and 6 (training loss per epoch, training
  accuracy against the learning rate, consecutive-layer differences at depth
  50, each layer's output), as PNG plots with the numbers behind them.
- ``table2 --dataset NAME``: the Table 2 rows of a data set, test accuracy
  over several realizations, printed beside the paper's numbers.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from mmbilevel.cli.argtypes import nonnegative_int, positive_float, positive_int

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)

FIGURE_NAMES = ("fig4", "fig5", "fig6-left", "fig6-right")
TABLE2_DATASETS = ("mnist", "fashion-mnist", "cifar10")


def parse_lr_grid(text: str) -> tuple[float, ...]:
    """Parse a learning-rate grid: ``"0.01,0.1,1"`` or ``"logspace:LOW:HIGH:COUNT"``.

    Raises:
        argparse.ArgumentTypeError: an entry is not a finite number > 0, or
            the log-spaced form is malformed.
    """
    if text.startswith("logspace:"):
        parts = text.split(":")[1:]
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(
                f"invalid grid {text!r}: expected logspace:LOW:HIGH:COUNT, for example logspace:0.01:10:7"
            )
        low, high = positive_float(parts[0]), positive_float(parts[1])
        count = positive_int(parts[2])
        if count == 1:
            return (low,)
        ratio = math.log(high / low) / (count - 1)
        return tuple(low * math.exp(ratio * index) for index in range(count))
    return tuple(positive_float(part.strip()) for part in text.split(","))


def _channels(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"invalid channels {text!r}: expected two counts such as 32,64")
    first, second = (positive_int(part.strip()) for part in parts)
    return first, second


def _csv_choice(choices: tuple[str, ...], option: str):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"invalid {option} {text!r}; expected a comma-separated subset of {', '.join(choices)}"
            )
        return names

    return parse


def _add_two_spiral(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/two-spiral"), metavar="DIR",
                        help="folder for the PNG plots and their JSON/CSV data (default runs/two-spiral)")
    parser.add_argument("--figures", type=_csv_choice(FIGURE_NAMES, "figures"), default=FIGURE_NAMES,
                        metavar="LIST", help="comma-separated subset of " + ", ".join(FIGURE_NAMES) + " (default all)")
    parser.add_argument("--epochs", type=nonnegative_int, default=1000, metavar="N",
                        help="epochs of Figures 4, 5 and 6 right (default 1000, as in the paper)")
    parser.add_argument("--lr-epochs", type=nonnegative_int, default=10_000, metavar="N",
                        help="epochs per learning rate of Figure 6 left (default 10000, as in the paper)")
    parser.add_argument("--realizations", type=positive_int, default=10, metavar="R",
                        help="realizations (seeds) per variant and setting (default 10)")
    parser.add_argument("--lr", type=positive_float, default=0.1, metavar="LR",
                        help="learning rate of Figures 4, 5 and 6 right (default 0.1)")
    parser.add_argument("--lr-grid", type=parse_lr_grid, default=None, metavar="GRID",
                        help="learning rates of Figure 6 left: comma-separated values or "
                        "logspace:LOW:HIGH:COUNT (default logspace:0.01:10:7)")
    parser.add_argument("--depth", type=positive_int, default=50, metavar="L",
                        help="number of layers of Figure 6 right (default 50)")
    parser.add_argument("--batch-size", type=positive_int, default=10, metavar="B",
                        help="mini-batch size (default 10)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                        help="seed of realization 1; realization r uses S + r − 1 (default 0)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                        help="floating dtype of data and weights (default float64)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto picks CUDA when available (default auto)")
    parser.add_argument("--replot", action="store_true",
                        help="only draw the PNG files again from the JSON/CSV data already in --out")


def _add_table2(parser: argparse.ArgumentParser) -> None:
    from mmbilevel.experiments.table2 import ROWS

    parser.add_argument("--dataset", type=str.lower, choices=TABLE2_DATASETS, default="fashion-mnist",
                        help="data set whose rows to train (default fashion-mnist)")
    parser.add_argument("--rows", type=_csv_choice(tuple(ROWS), "rows"), default=None, metavar="LIST",
                        help="comma-separated subset of " + ", ".join(ROWS) + " (default: the data set's rows)")
    parser.add_argument("--variants", type=_csv_choice(("standard", "euclidean", "bregman"), "variants"),
                        default=("standard", "euclidean", "bregman"), metavar="LIST",
                        help="comma-separated subset of standard, euclidean, bregman (default all)")
    parser.add_argument("--epochs", type=nonnegative_int, default=10, metavar="N", help="epochs (default 10)")
    parser.add_argument("--realizations", type=positive_int, default=5, metavar="R",
                        help="realizations (seeds) per cell (default 5, as in the paper)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                        help="seed of realization 1; realization r uses S + r − 1 (default 0)")
    parser.add_argument("--optimizer", type=str.lower, choices=("adam", "sgd"), default="adam",
                        help="optimizer (default adam)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, metavar="LR", help="learning rate (default 0.001)")
    parser.add_argument("--batch-size", type=positive_int, default=128, metavar="B", help="mini-batch size (default 128)")
    parser.add_argument("--activation", type=str.lower, default="sigmoid", metavar="NAME",
                        help="activation of the hidden layers, a Legendre function name (default sigmoid)")
    parser.add_argument("--width", type=positive_int, default=None, metavar="D",
                        help="hidden width of the FFNN rows (default: number of pixels, 784 for 28 × 28)")
    parser.add_argument("--cnn-features", type=positive_int, default=128, metavar="F",
                        help="feature and hidden width of the CNN row's FFNN head (default 128)")
    parser.add_argument("--cnn-channels", type=_channels, default=(32, 64), metavar="C1,C2",
                        help="output channels of the two convolution blocks of the CNN row (default 32,64)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="train on the first N training samples only")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test samples only")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder of the data set files (else $MMBILEVEL_DATA or /usr/share/datasets)")
    parser.add_argument("--out", type=Path, default=Path("runs/table2"), metavar="DIR",
                        help="output folder; cells go to DIR/DATASET/ROW/VARIANT (default runs/table2)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished cells in --out and continue interrupted ones")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto picks CUDA when available (default auto)")
    parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``two-spiral`` and ``table2`` subcommands to ``parser``."""
    subparsers = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    spiral = subparsers.add_parser(
        "two-spiral", help="Figures 4, 5 and 6 on the two-spiral set",
        description="Train the Standard, Euclidean and Bregman networks of the two-spiral experiment "
        "and write Figures 4, 5 and 6 as PNG plots with their data (JSON and CSV).",
    )
    _add_two_spiral(spiral)
    table = subparsers.add_parser(
        "table2", help="Table 2 rows of an image data set",
        description="Train the Table 2 rows of a data set and print the mean test accuracy beside the paper's.",
    )
    _add_table2(table)


def _run_two_spiral(args: argparse.Namespace) -> int:
    import torch

    from mmbilevel.experiments.two_spiral import DEFAULT_LR_GRID, SpiralSettings, redraw_figures, run_two_spiral
    from mmbilevel.train import resolve_device

    if args.replot:
        for path in redraw_figures(args.out):
            print(f"redrew {path}")
        return 0

    settings = SpiralSettings(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        realizations=args.realizations,
        seed=args.seed,
        lr_grid=args.lr_grid or DEFAULT_LR_GRID,
        lr_epochs=args.lr_epochs,
        depth=args.depth,
        dtype=torch.float64 if args.dtype == "float64" else torch.float32,
        device=resolve_device(args.device),
    )
    report = run_two_spiral(settings, args.out, figures=args.figures)
    for line in report.summary_lines():
        print(line)
    return 0


def _run_table2(args: argparse.Namespace) -> int:
    from mmbilevel.experiments.table2 import Table2Settings, collect_cells, format_table, run_table2

    settings = Table2Settings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
        realizations=args.realizations, seed=args.seed, activation=args.activation,
        width=args.width, cnn_features=args.cnn_features, cnn_channels=args.cnn_channels, limit=args.limit,
        test_limit=args.test_limit, device=args.device,
    )
    cells = run_table2(
        args.dataset, settings, args.out, rows=args.rows, variants=args.variants,
        data_dir=args.data_dir, resume=args.resume, progress=False if args.no_progress else None,
    )

    seconds = sum(cell.seconds for cell in cells)
    print(f"Table 2, {args.dataset}: test accuracy in percent, measured mean ± std (paper's mean)")
    print(format_table(collect_cells(args.out, args.dataset), args.dataset))
    print(f"trained or reused {len(cells)} cells in {seconds / 60:.1f} min; tables in {args.out / args.dataset}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``mmbilevel reproduce EXPERIMENT`` and return the exit status.

    The status is 0 on success, 1 when a file is missing, corrupt or cannot
    be written, 2 for invalid settings and 130 on Ctrl-C. Status 1 covers
    the data set files and the damaged output of an earlier run that
    ``--replot`` or ``--resume`` reads back. Errors are logged as one line
    each, with the traceback at debug level (``-vv``).
    """
    from mmbilevel.data import DataFormatError, DatasetNotFoundError
    from mmbilevel.experiments.errors import OutputFileError
    from mmbilevel.train import TrainingInterrupted

    try:
        if args.experiment == "two-spiral":
            return _run_two_spiral(args)
        return _run_table2(args)
    except TrainingInterrupted as interrupt:
        logger.error(
            "interrupted: the state after epoch %s is saved in %s; rerun the same command with --resume",
            interrupt.epoch, interrupt.checkpoint_path,
        )
        return 130
    except (DatasetNotFoundError, DataFormatError, OutputFileError) as error:
        logger.debug("traceback", exc_info=True)
        logger.error("%s", error)
        return 1
    except ValueError as error:
        logger.debug("traceback", exc_info=True)
        logger.error("%s", error)
        return 2
    except OSError as error:
        logger.debug("traceback", exc_info=True)
        logger.error("%s", error)
        return 1
