"""``mmbilevel train``: train a Standard, Euclidean or Bregman network on a data set.

Without ``--dataset`` the command trains on Fashion-MNIST when its files are
found (``--data-dir``, ``$MMBILEVEL_DATA`` or ``/usr/share/datasets``) and on
the generated two-spiral set otherwise, and reports which one it used.
Options left unset take the defaults of the chosen data set (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmbilevel.cli.argtypes import nonnegative_int, positive_float, positive_int

__all__ = ["add_arguments", "run", "DATASET_DEFAULTS", "parse_widths"]

logger = logging.getLogger(__name__)

DATASET_NAMES = ("two-spiral", "mnist", "fashion-mnist", "cifar10")
MODEL_NAMES = ("ffnn", "cnn")
INIT_NAMES = ("random", "deterministic")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
EXIT_STATUS_HELP = """exit status:
  0    success
  1    data set files missing or corrupt, or a file that cannot be read or
       written (for example an --out that names a file)
  2    invalid or conflicting settings, a --resume whose settings differ from
       the stored run, or an --out that contains another run
  3    training diverged (NaN or infinite loss); the results are written with
       "diverged": true
  130  interrupted (Ctrl-C); the state after the last finished epoch is saved,
       and the same command with --resume continues the run
"""


@dataclass(frozen=True)
class DatasetDefaults:
    """Settings used for a data set when the command line leaves them unset."""

    model: str
    hidden: tuple[int, ...]
    activation: str
    epochs: int
    lr: float
    batch_size: int
    optimizer: str
    loss: str


# Two-spiral: the setting of Figure 5 of "Bilevel Learning of Deep
# Representations" (3 arctan layers of 2 neurons, batch 10, learning rate
# 0.1, 1000 epochs). Images: one hidden layer of d = 784 neurons for the
# 28 × 28 sets and a small CNN for CIFAR-10, as in Table 2 of that paper,
# with sigmoid activations, whose dom φ = [0, 1] matches pixels in ]0, 1[.
# The main text of that paper gives no optimizer or epochs for images. Adam
# at 1e-3 with batch 128 is a common choice. An epoch of the 784-unit Bregman
# FFNN on all of Fashion-MNIST takes about 20 s on 2 CPU cores, an estimate
# scaled from 3 epochs on 5000 images.
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "two-spiral": DatasetDefaults("ffnn", (2, 2, 2), "arctan", 1000, 0.1, 10, "sgd", "cross-entropy"),
    "mnist": DatasetDefaults("ffnn", (784,), "sigmoid", 10, 1e-3, 128, "adam", "cross-entropy"),
    "fashion-mnist": DatasetDefaults("ffnn", (784,), "sigmoid", 10, 1e-3, 128, "adam", "cross-entropy"),
    "cifar10": DatasetDefaults("cnn", (128,), "sigmoid", 20, 1e-3, 128, "adam", "cross-entropy"),
}


def parse_widths(text: str) -> tuple[int, ...]:
    """Parse comma-separated hidden widths such as ``"784,784"``.

    Raises:
        argparse.ArgumentTypeError: an entry is empty, not an integer or < 1.
    """
    parts = [part.strip() for part in text.split(",")]
    widths = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"invalid widths {text!r}: expected comma-separated positive integers such as 784,784"
            )
        widths.append(int(part))
    return tuple(widths)


def _lower(text: str) -> str:
    return text.lower()


def _defaults_help() -> str:
    lines = []
    for name, defaults in DATASET_DEFAULTS.items():
        hidden = ",".join(map(str, defaults.hidden))
        lines.append(
            f"{name}: --model {defaults.model} --hidden {hidden} --activation {defaults.activation} "
            f"--epochs {defaults.epochs} --lr {defaults.lr:g} --batch-size {defaults.batch_size} "
            f"--optimizer {defaults.optimizer} --loss {defaults.loss}"
        )
    return "defaults per data set, for the options left unset:\n  " + "\n  ".join(lines) + "\n\n" + EXIT_STATUS_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``mmbilevel train`` to ``parser``."""
    from mmbilevel.legendre import available
    from mmbilevel.train import LOSSES, OPTIMIZERS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _defaults_help()
    parser.add_argument(
        "--dataset", type=_lower, choices=DATASET_NAMES, default=None,
        help="data set; default fashion-mnist when its files are found, else two-spiral",
    )
    parser.add_argument("--model", type=_lower, choices=MODEL_NAMES, default=None,
                        help="ffnn (fully connected) or cnn (convolutional features + FFNN head)")
    parser.add_argument("--variant", type=_lower, choices=("standard", "euclidean", "bregman"),
                        default="bregman", help="layer variant (default: bregman)")
    parser.add_argument("--activation", type=_lower, choices=available(), default=None, metavar="NAME",
                        help="activation ρ = ∇φ*, a Legendre function name: " + ", ".join(available()))
    parser.add_argument("--hidden", type=parse_widths, default=None, metavar="WIDTHS",
                        help="comma-separated hidden layer widths, for example 784,784; for cnn the "
                        "widths of the FFNN head, the first also being the convolutional feature width")
    parser.add_argument("--init", type=_lower, choices=INIT_NAMES, default="random",
                        help="random weights, or the deterministic non-informative ones "
                        "(W = I for standard, W = 0 otherwise, zero biases); default random")
    parser.add_argument("--epochs", type=nonnegative_int, default=None, metavar="N", help="number of epochs")
    parser.add_argument("--lr", type=positive_float, default=None, metavar="LR", help="learning rate > 0")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help="mini-batch size")
    parser.add_argument("--optimizer", type=_lower, choices=OPTIMIZERS.names(), default=None,
                        help="upper-level optimizer, mini-batch SGD or Adam")
    parser.add_argument("--loss", type=_lower, choices=LOSSES.names(), default=None,
                        help="cross-entropy, or squared error of the logits against one-hot labels")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                        help="seed of realization 1; realization r uses S + r − 1 (default 0)")
    parser.add_argument("--realizations", type=positive_int, default=1, metavar="R",
                        help="number of independent realizations (seeds) to train (default 1)")
    parser.add_argument("--sequential", action="store_true",
                        help="train realizations one after another instead of as one vectorized batch")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder of the data set files, or a root folder that contains them in "
                        "DIR/NAME (for example DIR/fashion-mnist); without it, $MMBILEVEL_DATA is searched "
                        "the same two ways, then /usr/share/datasets/NAME")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="train on the first N training samples only")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test samples only")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="floating dtype of data and weights (default float32)")
    parser.add_argument("--device", type=_lower, choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto picks CUDA when available (default auto)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder of results.json, history.csv and checkpoints "
                        "(default runs/DATASET-MODEL-VARIANT)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the run stored in --out from its checkpoints; it must have been "
                          "started with the same settings (--epochs may be larger). Without checkpoints "
                          "in --out, a warning is logged and training starts from scratch")
    existing.add_argument("--overwrite", action="store_true",
                          help="delete the files of an earlier run in --out (results, history, checkpoints) "
                          "and start over; without --resume or --overwrite, an --out that contains "
                          "another run is rejected")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                        help="save a checkpoint every N epochs (default: about every tenth of the run)")
    parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")


def _choose_dataset(args: argparse.Namespace) -> tuple[str, str]:
    """Return the data set name and a sentence saying why it was chosen."""
    from mmbilevel.data import DatasetNotFoundError, find_data_dir

    if args.dataset is not None:
        return args.dataset, "requested with --dataset"
    try:
        folder = find_data_dir("fashion-mnist", args.data_dir)
    except DatasetNotFoundError:
        return "two-spiral", "default: Fashion-MNIST files were not found, so the generated two-spiral set is used"
    return "fashion-mnist", f"default: Fashion-MNIST files were found in {folder}"


def _resolve_settings(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    defaults = DATASET_DEFAULTS[dataset]
    settings = {
        name: getattr(args, name) if getattr(args, name) is not None else getattr(defaults, name)
        for name in ("model", "hidden", "activation", "epochs", "lr", "batch_size", "optimizer", "loss")
    }
    if dataset == "two-spiral" and settings["model"] == "cnn":
        raise ValueError("--model cnn needs an image data set; use --model ffnn for two-spiral")
    return settings


def _model_factory(
    settings: dict[str, Any],
    variant: str,
    init: str,
    input_shape: tuple[int, ...],
    classes: int,
    dtype: torch.dtype,
) -> Callable[[], torch.nn.Module]:
    """Return a function that builds the requested network.

    Bregman layers clamp their inputs a few ulps inside dom φ: in float32 a
    saturating activation such as the sigmoid can round onto the end of its
    domain, where ρ⁻¹ is infinite and the unclamped layer raises.
    For ``cnn`` the first hidden width is also the width of the feature
    vector that the convolutions produce.
    """
    from mmbilevel.nn import FFNN, ConvFFNN

    hidden = list(settings["hidden"])
    activation = settings["activation"]

    def build_ffnn() -> torch.nn.Module:
        return FFNN(math.prod(input_shape), hidden, classes, activation, variant, init, clamp=True, dtype=dtype)

    def build_cnn() -> torch.nn.Module:
        channels, height, width = input_shape
        return ConvFFNN(
            channels, (height, width), classes, activation, variant, init,
            features=hidden[0], hidden=hidden, clamp=True, dtype=dtype,
        )

    return build_ffnn if settings["model"] == "ffnn" else build_cnn


def _run_config(args: argparse.Namespace, dataset: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Return the data and model settings that a resumed run must share with its checkpoints."""
    return {
        "dataset": dataset,
        "model": settings["model"],
        "variant": args.variant,
        "activation": settings["activation"],
        "hidden": list(settings["hidden"]),
        "init": args.init,
        "dtype": args.dtype,
        "limit": args.limit,
        "test_limit": args.test_limit,
    }


def _train(args, config, build_model, train_data, test_data, device, out_dir: Path, run_config: dict[str, Any]):
    """Train every realization and return (results, wall seconds, whether batched)."""
    from mmbilevel.train import build_seeded, train_model
    from mmbilevel.train.batched import BatchingUnsupportedError, train_batched

    seeds = [args.seed + index for index in range(args.realizations)]
    checkpoint_every = args.checkpoint_every or max(1, math.ceil(config.epochs / 10))
    progress = False if args.no_progress else None
    probe = build_seeded(build_model, seeds[0])
    stateful = [
        type(module).__name__
        for module in probe.modules()
        if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd))
    ]
    batched = len(seeds) > 1 and not args.sequential and not stateful
    if len(seeds) > 1 and stateful and not args.sequential:
        logger.info("the model contains %s, which vmap cannot batch; training realizations one by one", stateful[0])

    tic = time.perf_counter()
    if batched:
        try:
            result = train_batched(
                build_model, train_data, test_data, config, seeds=seeds, device=device,
                checkpoint_path=out_dir / "checkpoint.pt", checkpoint_every=checkpoint_every,
                resume=args.resume, progress=progress, run_config=run_config,
            )
            return result.results(), time.perf_counter() - tic, True
        except BatchingUnsupportedError as error:
            logger.warning("%s; training the realizations one by one instead", error)
            tic = time.perf_counter()

    results = []
    for seed in seeds:
        seed_config = type(config)(**{**config.to_dict(), "seed": seed})
        model = build_seeded(build_model, seed, device)
        results.append(
            train_model(
                model, train_data, test_data, seed_config,
                checkpoint_path=out_dir / f"checkpoint-seed{seed}.pt", checkpoint_every=checkpoint_every,
                resume=args.resume, progress=progress, run_config=run_config,
            )
        )
    return results, time.perf_counter() - tic, False


def run(args: argparse.Namespace) -> int:
    """Run ``mmbilevel train`` and return the exit status.

    The status is 0 on success, 1 when the data set files are missing or
    corrupt or a file cannot be read or written, 2 for settings that cannot
    go together (for example ``--model cnn`` on two-spiral, or ``--device
    cuda`` without CUDA), 3 when a realization diverged and 130 on Ctrl-C
    (see ``EXIT_STATUS_HELP``). Errors are logged as one line each, with
    the traceback at debug level (``-vv``).
    """
    from mmbilevel.data import DataFormatError, DatasetNotFoundError
    from mmbilevel.train import TrainingInterrupted

    try:
        return _run(args)
    except TrainingInterrupted as interrupt:
        if interrupt.epoch is None:
            logger.error("interrupted before the first epoch finished; no checkpoint was written")
        else:
            logger.error(
                "interrupted: the state after epoch %d is saved in %s; to continue, rerun the same "
                "command with --resume", interrupt.epoch, interrupt.checkpoint_path,
            )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        logger.error("interrupted; to continue from the checkpoints in --out, if any, rerun the same command with --resume")
        return EXIT_INTERRUPTED
    except (DatasetNotFoundError, DataFormatError) as error:
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


def _run(args: argparse.Namespace) -> int:
    from mmbilevel.data import DATASETS, DataFormatError, DatasetNotFoundError, prepare
    from mmbilevel.train import TrainConfig, resolve_device
    from mmbilevel.train.results import write_results
    from mmbilevel.train.rundir import prepare_output_folder

    dataset, reason = _choose_dataset(args)
    logger.info("data set %s (%s)", dataset, reason)
    try:
        settings = _resolve_settings(args, dataset)
        config = TrainConfig(
            epochs=settings["epochs"], lr=settings["lr"], batch_size=settings["batch_size"],
            optimizer=settings["optimizer"], loss=settings["loss"], seed=args.seed,
        )
        device = resolve_device(args.device)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    dtype = DTYPES[args.dtype]
    out_dir = args.out or Path("runs") / f"{dataset}-{settings['model']}-{args.variant}"

    run_config = _run_config(args, dataset, settings)
    prepare_output_folder(
        out_dir,
        {**run_config, **config.to_dict(), "realizations": args.realizations, "sequential": args.sequential},
        resume=args.resume,
        overwrite=args.overwrite,
    )

    flatten = settings["model"] == "ffnn"
    common = {"flatten": flatten, "data_dir": args.data_dir, "dtype": dtype}
    try:
        train_data = prepare(dataset, settings["activation"], split="train", limit=args.limit, **common)
        test_data = prepare(dataset, settings["activation"], split="test", limit=args.test_limit, **common)
    except (DatasetNotFoundError, DataFormatError) as error:
        logger.error("%s", error)
        return 1
    info = DATASETS.get(dataset)
    input_shape = tuple(train_data[0].shape[1:])
    build_model = _model_factory(settings, args.variant, args.init, input_shape, info.num_classes, dtype)
    logger.info("training on %s with %d training and %d test samples", device, len(train_data[1]), len(test_data[1]))

    results, wall_seconds, batched = _train(
        args, config, build_model, train_data, test_data, device, out_dir, run_config
    )

    run_settings = {
        "dataset": dataset,
        "dataset_choice": reason,
        "model": settings["model"],
        "variant": args.variant,
        "activation": settings["activation"],
        "hidden": list(settings["hidden"]),
        "init": args.init,
        "dtype": args.dtype,
        "train_samples": int(train_data[0].shape[0]),
        "test_samples": int(test_data[0].shape[0]),
        "realizations": args.realizations,
        "batched": batched,
    }
    paths = write_results(out_dir, results, config, wall_seconds=wall_seconds, device=str(device), run=run_settings)
    _print_summary(dataset, reason, run_settings, config, results, wall_seconds, device, paths)
    diverged = [result.seed for result in results if result.diverged]
    if diverged:
        logger.error(
            "training diverged for seed(s) %s, whose final metrics are NaN; see the errors above and "
            "rerun with a lower --lr than %g", ", ".join(map(str, diverged)), config.lr,
        )
        return EXIT_DIVERGED
    return 0


def _print_summary(dataset, reason, run_settings, config, results, wall_seconds, device, paths) -> None:
    from mmbilevel.train.results import summarize

    summary = summarize(results)
    mean, std = summary["mean"], summary["std"]
    hidden = ",".join(map(str, run_settings["hidden"]))
    print(f"data set: {dataset} ({reason})")
    print(
        f"model: {run_settings['model']} {run_settings['variant']}, hidden {hidden}, "
        f"activation {run_settings['activation']}, init {run_settings['init']}"
    )
    print(
        f"trained {len(results)} realization(s) for {config.epochs} epochs "
        f"({config.optimizer}, lr {config.lr:g}, batch {config.batch_size}, {config.loss}) "
        f"in {wall_seconds:.1f} s on {device}"
    )
    for split in ("train", "test"):
        print(
            f"{split}: loss {mean[f'{split}_loss']:.4f} ± {std[f'{split}_loss']:.4f}, "
            f"accuracy {mean[f'{split}_accuracy']:.4f} ± {std[f'{split}_accuracy']:.4f}"
        )
    for result in results:
        if result.diverged:
            print(f"seed {result.seed}: diverged at epoch {result.diverged_epoch} (NaN or infinite loss)")
    print(f"results: {paths['json']} and {paths['csv']}")
