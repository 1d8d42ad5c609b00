"""The training and inference loops of :class:`~stepline.torch.TorchStep`.

Plain functions over a module, an optimizer and tensors: minibatches, epochs, an
optional validation split, early stopping that restores the best weights, one
progress line per epoch on the ``stepline.torch`` logger (``logging.INFO``), and each
epoch's record to :func:`stepline.core.epochs.report_epoch` (how tuning prunes).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from stepline.core.epochs import report_epoch

logger = logging.getLogger("stepline.torch")


@dataclass
class TrainingConfig:
    epochs: int
    batch_size: int
    shuffle: bool = True
    validation_split: float = 0.0
    early_stopping_patience: int | None = None
    seed: int | None = None
    name: str = "TorchStep"


# ------------------------------------------------------------------ data
def float_dtype_of(model) -> torch.dtype:
    """The floating dtype of the model's parameters (the default dtype if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def as_tensor(data, float_dtype: torch.dtype, what: str) -> torch.Tensor:
    """``data`` (array, tensor, nested lists) as a CPU-or-device tensor; floats in ``float_dtype``.

    NumPy arrays are wrapped without a copy when their dtype already fits.
    """
    if isinstance(data, torch.Tensor):
        t = data.detach()
    else:
        array = np.asarray(data)
        if array.dtype == object:
            raise TypeError(f"{what} must be numeric (an array or tensor), got an object array")
        if not array.flags.writeable:  # torch warns on read-only (memory-mapped) arrays
            array = array.copy()
        t = torch.from_numpy(np.ascontiguousarray(array))
    if t.ndim == 0:
        raise ValueError(f"{what} must have one row per sample, got a scalar")
    if t.is_floating_point() and t.dtype != float_dtype:
        t = t.to(float_dtype)
    return t


def _fit_target(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Shape float targets like the outputs when only a unit axis differs (``(n,)`` vs ``(n, 1)``)."""
    if targets.is_floating_point() and outputs.shape != targets.shape and outputs.numel() == targets.numel():
        return targets.view(outputs.shape)
    return targets


# ------------------------------------------------------------------ training
def train(model, optimizer, loss_fn, X: torch.Tensor, y: torch.Tensor, device, config: TrainingConfig) -> list[dict]:
    """Train ``model`` in place; return one ``{"epoch", "loss"[, "val_loss"]}`` per epoch run."""
    n = len(X)
    if len(y) != n:
        raise ValueError(f"step {config.name!r}: {n} data inputs but {len(y)} expected outputs")
    if n == 0:
        raise ValueError(f"step {config.name!r}: cannot fit on zero samples")
    generator = torch.Generator()
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(config.seed))
    train_idx, val_idx = _split(n, config.validation_split, generator)
    patience = config.early_stopping_patience
    history: list[dict] = []
    best, best_state, best_epoch, since_best = math.inf, None, 0, 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)] if config.shuffle else train_idx
        total = torch.zeros((), device=device, dtype=torch.float64)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            xb = X[idx].to(device, non_blocking=True)
            yb = y[idx].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            outputs = model(xb)
            loss = loss_fn(outputs, _fit_target(outputs, yb))
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        record = {"epoch": epoch, "loss": float(total) / len(order)}
        if len(val_idx):
            record["val_loss"] = evaluate(model, loss_fn, X[val_idx], y[val_idx], device, config.batch_size)
        record["seconds"] = round(time.perf_counter() - started, 4)
        history.append(record)
        _log_epoch(config, record)
        report_epoch(record)  # a tuner's pruner may raise here to stop the trial
        if not math.isfinite(record["loss"]):
            logger.warning("step %r: loss is %s at epoch %d; stopping", config.name, record["loss"], epoch)
            break
        if patience is not None:
            monitored = record.get("val_loss", record["loss"])
            if monitored < best:
                best, best_epoch, since_best = monitored, epoch, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= patience:
                    logger.info("step %r: early stop at epoch %d; best epoch %d (%s %.6g)", config.name,
                                epoch, best_epoch, "val_loss" if len(val_idx) else "loss", best)
                    break
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(best_state)
    return history


def _split(n: int, fraction: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (seeded) train/validation indices; the validation part holds ``fraction`` of the rows."""
    if not fraction:
        return torch.arange(n), torch.arange(0)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise ValueError(f"validation_split={fraction} leaves no training data out of {n} samples")
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _log_epoch(config: TrainingConfig, record: dict) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    width = len(str(config.epochs))
    extra = f"  val_loss {record['val_loss']:.6g}" if "val_loss" in record else ""
    logger.info("step %r: epoch %*d/%d  loss %.6g%s  (%.2fs)", config.name, width, record["epoch"],
                config.epochs, record["loss"], extra, record["seconds"])


# ------------------------------------------------------------------ inference
@torch.no_grad()
def evaluate(model, loss_fn, X, y, device, batch_size: int) -> float:
    """Mean loss over ``X, y`` in eval mode (the model is put back in train mode after)."""
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), device=device, dtype=torch.float64)
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size].to(device, non_blocking=True)
            yb = y[start:start + batch_size].to(device, non_blocking=True)
            outputs = model(xb)
            total += loss_fn(outputs, _fit_target(outputs, yb)).detach() * len(xb)
        return float(total) / len(X)
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model, X: torch.Tensor, device, batch_size: int) -> np.ndarray:
    """The model's outputs for ``X`` as one NumPy array, batch by batch, in eval mode."""
    model.eval()
    outputs = []
    for start in range(0, len(X), batch_size):
        out = model(X[start:start + batch_size].to(device, non_blocking=True))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the model returned {type(out).__name__}; TorchStep.transform needs a tensor")
        outputs.append(out.detach())
    if not outputs:
        return np.empty((0,), dtype=np.float32)
    result = torch.cat(outputs).to("cpu")
    if result.dtype in (torch.bfloat16, torch.float16):
        result = result.float()
    return result.numpy()
