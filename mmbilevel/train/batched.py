"""Training many small models of one architecture as one vectorized batch.

The R realizations of an experiment differ only in their seed, which fixes
their initial weights and their mini-batch order. Their parameters are
stacked along a new leading dimension with ``torch.func.stack_module_state``.
One ``torch.vmap`` of ``torch.func.functional_call`` computes all R losses in
one call, and one reverse pass through their sum gives all R gradients. This
removes the per-model Python and kernel-launch overhead that dominates for
networks of a few neurons.

Why a realization follows the trajectory it would follow alone: the terms of
Σ_r ℓ_r(θ_r) share no parameters, so the gradient of that sum with respect
to slice r of a stacked parameter is the gradient of realization r's own
mini-batch loss with respect to its own parameters, and
SGD (with or without momentum or weight decay) and Adam update every entry
from that entry's gradient and state only, with a step counter that all
realizations share. Applying the torch optimizer to the stacked tensors is
therefore the same computation as R separate runs, up to the summation order
of the batched matrix products, a floating-point rounding difference.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from mmbilevel.train.checkpoint import PendingCheckpoint, load_checkpoint, rng_state, set_rng_state
from mmbilevel.train.config import TrainConfig, build_seeded, resolve_device
from mmbilevel.train.history import EpochRecord, History
from mmbilevel.train.losses import LossFn, get_loss
from mmbilevel.train.optimizers import make_optimizer
from mmbilevel.train.runconfig import normalize_run_config
from mmbilevel.train.trainer import (
    TrainData,
    TrainResult,
    _check_resume_config,
    _log_divergence,
    _log_epoch,
    as_tensor_pair,
    progress_enabled,
)

__all__ = ["BatchedResult", "BatchingUnsupportedError", "train_batched"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mmbilevel-batched-checkpoint-2"


class BatchingUnsupportedError(RuntimeError):
    """The model's forward pass cannot run under ``torch.vmap``.

    Typical causes: Python control flow on tensor values (for example
    ``if tensor.any(): raise``), in-place updates of buffers, or random
    operations. Train the realizations one by one with
    :func:`~mmbilevel.train.train_model` instead.
    """


@dataclass
class BatchedResult:
    """Outcome of training R realizations together.

    Attributes:
        histories: one per-epoch history per realization, in seed order.
        seeds: the seed of each realization.
        seconds: wall time of the whole batched run, summed over resumed parts.
        device: device the realizations were trained on.
        params: stacked parameters, each of shape ``(R, *shape)``.
        buffers: stacked buffers, each of shape ``(R, *shape)``.
        template: the module whose architecture every realization shares.
        diverged_epochs: per realization, the epoch at which its loss became
            NaN or infinite and its history stopped, or None.
    """

    histories: list[History]
    seeds: list[int]
    seconds: float
    device: str
    params: dict[str, torch.Tensor] = field(repr=False)
    buffers: dict[str, torch.Tensor] = field(repr=False)
    template: nn.Module = field(repr=False)
    diverged_epochs: list[int | None] = field(default_factory=list)

    def model(self, index: int) -> nn.Module:
        """Return a standalone copy of realization ``index`` with its trained weights."""
        if not 0 <= index < len(self.seeds):
            raise IndexError(f"realization index {index} is out of range for {len(self.seeds)} realizations")
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                tensor.copy_(self.params[name][index])
            for name, tensor in model.named_buffers():
                tensor.copy_(self.buffers[name][index])
        return model

    def results(self) -> list[TrainResult]:
        """Split the run into one :class:`TrainResult` per realization.

        Each result's ``seconds`` is the wall time of the whole batch, since
        the realizations were not timed separately.
        """
        diverged_epochs = self.diverged_epochs or [None] * len(self.seeds)
        return [
            TrainResult(history, seed, self.seconds, self.device, self.model(index), diverged_epochs[index])
            for index, (history, seed) in enumerate(zip(self.histories, self.seeds))
        ]


class _StackedModel:
    """Evaluate R stacked copies of a template module with vmap."""

    def __init__(self, template: nn.Module, loss_fn: LossFn) -> None:
        self.template = template
        self.loss_fn = loss_fn

        def loss_of(params: dict, buffers: dict, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            logits = functional_call(template, (params, buffers), (inputs,))
            return loss_fn(logits, labels)

        def metrics_of(params: dict, buffers: dict, inputs: torch.Tensor, labels: torch.Tensor):
            logits = functional_call(template, (params, buffers), (inputs,))
            correct = (logits.argmax(dim=-1) == labels).to(logits.dtype).mean()
            return loss_fn(logits, labels), correct

        self.losses = vmap(loss_of)
        # One evaluation set is shared by all realizations (labels and inputs
        # are not batched).
        self.metrics = vmap(metrics_of, in_dims=(0, 0, None, None))

    def gradients(
        self, params: dict, buffers: dict, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Return the gradient of each realization's loss, stacked like ``params``.

        The losses are summed before one reverse pass: slice r of the
        gradient of Σ_r ℓ_r(θ_r) is ∇ℓ_r(θ_r), since the terms share no
        parameters. This is about twice as fast as ``vmap(grad(...))``.
        """
        losses = self.losses(params, buffers, inputs, labels)
        return torch.autograd.grad(losses.sum(), list(params.values()))

    @torch.no_grad()
    def evaluate(
        self, params: dict, buffers: dict, data: tuple[torch.Tensor, torch.Tensor], batch_size: int
    ) -> tuple[list[float], list[float]]:
        inputs, labels = data
        total_loss: torch.Tensor | None = None
        total_correct: torch.Tensor | None = None
        for start in range(0, inputs.shape[0], batch_size):
            chunk_inputs = inputs[start : start + batch_size]
            chunk_labels = labels[start : start + batch_size]
            loss, correct = self.metrics(params, buffers, chunk_inputs, chunk_labels)
            size = chunk_labels.shape[0]
            loss, correct = loss.double() * size, correct.double() * size
            total_loss = loss if total_loss is None else total_loss + loss
            total_correct = correct if total_correct is None else total_correct + correct
        if total_loss is None:
            raise ValueError("cannot evaluate on an empty split")
        count = inputs.shape[0]
        return (total_loss / count).tolist(), (total_correct / count).tolist()


def _check_batchable(
    stacked: _StackedModel,
    params: dict,
    buffers: dict,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    realizations: int,
) -> None:
    """Run one vmapped gradient on the first sample and turn a vmap failure into a clear error."""
    index = torch.zeros(realizations, 1, dtype=torch.long, device=inputs.device)
    try:
        stacked.gradients(params, buffers, inputs[index], labels[index])
    except RuntimeError as error:
        if "vmap" not in str(error):
            raise
        reason = str(error).split(".")[0]
        raise BatchingUnsupportedError(
            f"the model cannot be trained as a vectorized batch because its forward pass "
            f"fails under torch.vmap ({reason}); train the realizations one by one with "
            f"train_model, or --sequential on the command line"
        ) from error


def _load_stacked_state(params: dict, buffers: dict, state: Mapping[str, Any], path: Path) -> None:
    """Copy the stacked checkpoint tensors in place, turning a mismatch into a clear ValueError."""
    try:
        with torch.no_grad():
            for name, tensor in params.items():
                tensor.copy_(state["params"][name])
            for name, tensor in buffers.items():
                tensor.copy_(state["buffers"][name])
    except (KeyError, RuntimeError) as error:
        raise ValueError(
            f"cannot resume: the weights in checkpoint {path} do not fit the model ({error}); "
            f"resume with the architecture the checkpoint was written with, or train without resume"
        ) from error


def train_batched(
    build_model: Callable[[], nn.Module],
    train: TrainData,
    test: TrainData | None = None,
    config: TrainConfig | None = None,
    *,
    realizations: int = 1,
    seeds: Sequence[int] | None = None,
    device: str | torch.device | None = "auto",
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> BatchedResult:
    """Train R realizations of one architecture together, vectorized with ``torch.vmap``.

    Realization r is built by ``build_model()`` with the global RNG seeded to
    its seed (see :func:`build_seeded`) and draws its mini-batch order from
    its own ``torch.Generator`` seeded the same way, so it follows the
    trajectory of ``train_model(build_seeded(build_model, seed), ...,
    TrainConfig(seed=seed, ...))`` up to floating-point rounding.

    Args:
        build_model: factory of the architecture. The module must map inputs
            to logits without in-place updates of buffers and without random
            operations in ``forward`` (no batch normalization in training
            mode, no dropout), which ``vmap`` cannot batch.
        train: training split, a pair ``(inputs, labels)`` of tensors.
        test: optional test split, a pair of tensors.
        config: training settings; ``config.seed`` is the first seed.
        realizations: number R of realizations, with seeds
            ``config.seed, …, config.seed + R − 1``; ignored when ``seeds``
            is given.
        seeds: explicit seed of each realization.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        checkpoint_path: file to save a checkpoint of the whole batch into
            every ``checkpoint_every`` epochs and after the last one. On
            Ctrl-C, the state after the last finished epoch is saved there
            when it was not yet, and ``TrainingInterrupted`` is raised.
        checkpoint_every: checkpoint period in epochs, ≥ 1.
        resume: continue from ``checkpoint_path`` when that file exists.
            Settings that differ from the checkpoint's (``epochs`` excepted)
            raise :class:`~mmbilevel.train.RunConfigMismatchError`.
        progress: draw a tqdm bar; None draws one when stderr is a TTY.
        run_config: settings outside ``config`` that change the trajectory
            (data, architecture, dtype), stored in the checkpoint and
            compared on resume as in :func:`~mmbilevel.train.train_model`.

    A realization whose full-set training loss becomes NaN or infinite
    after an epoch is logged as an error and its history stops there, while
    the others go on; training ends early when every realization diverged.

    Returns:
        Per-realization histories, the stacked trained parameters and the
        epoch at which each realization diverged, if it did.

    Raises:
        BatchingUnsupportedError: the model's forward pass cannot run under
            ``torch.vmap``; checked on one sample before training starts.
    """
    config = TrainConfig() if config is None else config
    if seeds is None:
        if realizations < 1:
            raise ValueError(f"realizations must be >= 1, got {realizations}")
        seeds = [config.seed + index for index in range(realizations)]
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path to resume from")
    if run_config is not None:
        run_config = normalize_run_config(run_config)
    device = resolve_device(device)

    train_pair = as_tensor_pair(train)
    if train_pair is None:
        raise TypeError("train_batched needs the training split as a pair (inputs, labels) of tensors")
    train_pair = (train_pair[0].to(device), train_pair[1].to(device))
    test_pair = None
    if test is not None:
        test_pair = as_tensor_pair(test)
        if test_pair is None:
            raise TypeError("train_batched needs the test split as a pair (inputs, labels) of tensors")
        test_pair = (test_pair[0].to(device), test_pair[1].to(device))

    models = [build_seeded(build_model, seed, device) for seed in seeds]
    params, buffers = stack_module_state(models)
    params = {name: tensor.detach().clone().requires_grad_(True) for name, tensor in params.items()}
    template = copy.deepcopy(models[0]).to("cpu")
    del models
    stacked = _StackedModel(copy.deepcopy(template).to("meta"), get_loss(config.loss))
    optimizer = make_optimizer(config.optimizer, list(params.values()), config.lr, **config.optimizer_options)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    histories = [History() for _ in seeds]

    start_epoch = 0
    seconds_before = 0.0
    if resume and not Path(checkpoint_path).is_file():
        logger.info("no checkpoint at %s to resume from; training from scratch", checkpoint_path)
    if resume and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        _check_resume_config(state, config, run_config, Path(checkpoint_path))
        if state.get("seeds") != seeds:
            raise ValueError(
                f"checkpoint {checkpoint_path} contains seeds {state.get('seeds')}, not {seeds}; "
                f"rerun with the saved seeds or without resume"
            )
        if state["epoch"] > config.epochs:
            raise ValueError(
                f"checkpoint {checkpoint_path} is at epoch {state['epoch']}, beyond the "
                f"requested {config.epochs} epochs; ask for at least {state['epoch']} epochs"
            )
        _load_stacked_state(params, buffers, state, Path(checkpoint_path))
        optimizer.load_state_dict(state["optimizer"])
        histories = [History.from_dict(columns) for columns in state["histories"]]
        for generator, generator_state in zip(generators, state["generators"]):
            generator.set_state(generator_state)
        set_rng_state(state["rng"])
        start_epoch = state["epoch"]
        seconds_before = state["seconds"]
        logger.info("resumed %d realizations from %s at epoch %d", len(seeds), checkpoint_path, start_epoch)

    # A realization whose history ends on a non-finite loss diverged before
    # the checkpoint was written.
    diverged_epochs: list[int | None] = [
        history.last.epoch if history.records and not math.isfinite(history.last.train_loss) else None
        for history in histories
    ]

    def record_epoch(epoch: int, tic: float) -> None:
        train_loss, train_acc = stacked.evaluate(params, buffers, train_pair, config.eval_batch_size)
        test_loss = test_acc = [math.nan] * len(seeds)
        if test_pair is not None:
            test_loss, test_acc = stacked.evaluate(params, buffers, test_pair, config.eval_batch_size)
        seconds = time.perf_counter() - tic

        # Diverged realizations stay in the stack, since vmap needs every
        # slice, but their histories stop at the epoch they diverged.
        active = [index for index, diverged in enumerate(diverged_epochs) if diverged is None]
        for index in active:
            record = EpochRecord(
                epoch, train_loss[index], train_acc[index], test_loss[index], test_acc[index], seconds
            )
            histories[index].append(record)
            if not math.isfinite(train_loss[index]):
                diverged_epochs[index] = epoch
                # The batch checkpoint keeps the other realizations going, so
                # it is not a finite state of this one: no path is named.
                _log_divergence(f"seed {seeds[index]}", epoch, train_loss[index], config)

        finite = [index for index in active if diverged_epochs[index] is None]
        if not finite:
            return
        mean = EpochRecord(
            epoch,
            sum(train_loss[index] for index in finite) / len(finite),
            sum(train_acc[index] for index in finite) / len(finite),
            sum(test_loss[index] for index in finite) / len(finite),
            sum(test_acc[index] for index in finite) / len(finite),
            seconds,
        )
        _log_epoch(mean, config.epochs, f"mean of {len(finite)} realizations: ")

    def checkpoint_state(epoch: int, seconds: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "config": config.to_dict(),
            "run": run_config,
            "seeds": seeds,
            "params": {name: tensor.detach() for name, tensor in params.items()},
            "buffers": dict(buffers),
            "optimizer": optimizer.state_dict(),
            "histories": [history.to_dict() for history in histories],
            "generators": [generator.get_state() for generator in generators],
            "rng": rng_state(),
            "seconds": seconds,
        }

    checkpoint = PendingCheckpoint(checkpoint_path, start_epoch if start_epoch > 0 else None)

    def finish_epoch(epoch: int) -> None:
        if checkpoint_path is None:
            return
        state = checkpoint_state(epoch, seconds_before + time.perf_counter() - run_start)
        if epoch > 0 and (epoch % checkpoint_every == 0 or epoch == config.epochs):
            checkpoint.save(state)
        else:
            checkpoint.hold(state)

    inputs, labels = train_pair
    n = inputs.shape[0]
    _check_batchable(stacked, params, buffers, inputs, labels, len(seeds))
    run_start = time.perf_counter()
    epochs_bar = tqdm(
        range(start_epoch + 1, config.epochs + 1),
        desc=f"{len(seeds)} realizations",
        unit="epoch",
        disable=not progress_enabled(progress),
        initial=start_epoch,
        total=config.epochs,
    )
    try:
        if start_epoch == 0 and not histories[0].records:
            record_epoch(0, time.perf_counter())
            finish_epoch(0)

        for epoch in epochs_bar:
            if all(diverged is not None for diverged in diverged_epochs):
                break
            tic = time.perf_counter()
            orders = torch.stack([torch.randperm(n, generator=generator) for generator in generators]).to(device)
            for index in torch.split(orders, config.batch_size, dim=1):
                grads = stacked.gradients(params, buffers, inputs[index], labels[index])
                for tensor, grad in zip(params.values(), grads):
                    tensor.grad = grad
                optimizer.step()
            record_epoch(epoch, tic)
            epochs_bar.set_postfix(loss=f"{sum(h.last.train_loss for h in histories) / len(seeds):.4g}")
            finish_epoch(epoch)
    except KeyboardInterrupt:
        epochs_bar.close()
        raise checkpoint.interrupted() from None
    epochs_bar.close()

    total_seconds = seconds_before + time.perf_counter() - run_start
    if checkpoint_path is not None and config.epochs == start_epoch == 0:
        checkpoint.save(checkpoint_state(0, total_seconds))
    final_params = {name: tensor.detach() for name, tensor in params.items()}
    return BatchedResult(
        histories, seeds, total_seconds, str(device), final_params, dict(buffers), template, diverged_epochs
    )
