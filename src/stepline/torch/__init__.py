"""PyTorch steps: ``pip install stepline[torch]``.

- :class:`TorchStep` (:mod:`stepline.torch.step`): a model built in ``setup`` on the
  configured device from a factory, trained by ``fit``, run by ``transform``, freed by
  ``teardown``; its training, architecture and optimizer settings are hyperparameters.
- :class:`TorchModuleSaver` (:mod:`stepline.torch.saver`): saves its weights and
  optimizer state as safetensors + JSON, never by pickling the module.

Only this package imports torch; ``import stepline`` does not.
"""
try:
    import safetensors as _safetensors  # noqa: F401
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"stepline.torch needs PyTorch and safetensors ({e}); install them with "
                      f"`pip install stepline[torch]`") from e

from stepline.torch.factories import LOSSES
from stepline.torch.saver import TorchModuleSaver
from stepline.torch.step import TRAINING_DEFAULTS, TorchStep
from stepline.torch.tensorfile import TensorStateError

__all__ = ["LOSSES", "TRAINING_DEFAULTS", "TensorStateError", "TorchModuleSaver", "TorchStep"]
