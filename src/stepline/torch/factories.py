"""What a :class:`~stepline.torch.TorchStep` is built from: module, optimizer, loss, device.

Everything here is a *recipe* that the step keeps (and pickles with its stripped copy)
and calls in ``setup``: classes by reference, classes or functions defined in
``__main__`` by value. Built objects (modules, optimizers) are never pickled.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import warnings

import torch
from torch import nn

#: Loss names accepted by ``TorchStep(loss=...)``.
LOSSES = {
    "mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss, "smooth_l1": nn.SmoothL1Loss,
    "cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "bce": nn.BCELoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
}


def _is_module_class(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def check_module_factory(module) -> None:
    """Raise unless ``module`` is an ``nn.Module`` class or a function returning a module."""
    if isinstance(module, nn.Module):
        raise TypeError(
            f"TorchStep takes the module's class (or a function that builds it), not a built "
            f"{type(module).__name__}: the model is built in setup(), on the configured device, "
            f"and never pickled. Pass {type(module).__name__} and its arguments as module_kwargs")
    if not callable(module):
        raise TypeError(f"module must be an nn.Module class or a function returning one, got {module!r}")


def build_module(factory, kwargs: dict) -> nn.Module:
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"the module factory {_describe(factory)} returned {type(model).__name__}, "
                        f"not a torch.nn.Module")
    return model


def check_optimizer_factory(optimizer) -> None:
    if isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError("TorchStep takes the optimizer's class (e.g. torch.optim.Adam) or a function "
                        "(params, lr, **kwargs) -> Optimizer, not a built optimizer")
    if isinstance(optimizer, str):
        optimizer_class(optimizer)
    elif not callable(optimizer):
        raise TypeError(f"optimizer must be a torch.optim class, its name or a function, got {optimizer!r}")


def optimizer_class(name: str):
    cls = getattr(torch.optim, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        known = sorted(n for n, c in vars(torch.optim).items()
                       if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
        raise ValueError(f"unknown optimizer {name!r}; torch.optim has {known}")
    return cls


def build_optimizer(factory, params, lr: float, kwargs: dict) -> torch.optim.Optimizer:
    factory = optimizer_class(factory) if isinstance(factory, str) else factory
    optimizer = factory(params, lr=lr, **kwargs)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"the optimizer factory {_describe(factory)} returned {type(optimizer).__name__}, "
                        f"not a torch.optim.Optimizer")
    return optimizer


def check_loss(loss) -> None:
    if isinstance(loss, nn.Module):
        raise TypeError(
            f"TorchStep takes the loss as a name ({sorted(LOSSES)}), an nn.Module class "
            f"(with loss_kwargs), functools.partial(LossClass, ...) or a function "
            f"(outputs, targets) -> loss, not a built {type(loss).__name__} (no module is pickled)")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known losses are {sorted(LOSSES)}")
    elif not callable(loss):
        raise TypeError(f"loss must be a name, a class or a function, got {loss!r}")


def build_loss(loss, kwargs: dict):
    """The loss callable for ``loss`` (built fresh: loss modules may hold tensors)."""
    if isinstance(loss, str):
        return LOSSES[loss](**kwargs)
    if _is_module_class(loss) or (isinstance(loss, functools.partial) and _is_module_class(loss.func)):
        return loss(**kwargs)
    if kwargs:
        return functools.partial(loss, **kwargs)
    return loss


def resolve_device(spec) -> torch.device:
    """``"auto"``/``None``: CUDA when available, else CPU; ``"cuda"`` without a GPU: CPU, with a warning."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {spec!r} asked for but CUDA is not available: using the CPU",
                      RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def seeded(seed, device: torch.device):
    """Run the block with torch's RNG seeded by ``seed``, restoring the caller's RNG after.

    ``seed=None`` uses (and advances) the global RNG instead.
    """
    if seed is None:
        yield
        return
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _describe(factory) -> str:
    return getattr(factory, "__qualname__", None) or repr(factory)
