"""The everyday steps, one module per family.

- :mod:`stepline.steps.flow`: run a step only in training or inference, only when a
  condition holds, or only when a hyperparameter enables it; choose one step of
  several; undo a preprocessing after a postprocessing.
- :mod:`stepline.steps.output_handlers`: transform the expected outputs, or inputs
  and expected outputs together.
- :mod:`stepline.steps.data`: shuffle, repeat fitting for epochs, run on minibatches.
- :mod:`stepline.steps.union`: run branches on the same inputs and join their outputs.
- :mod:`stepline.steps.numpy`: small NumPy steps and any function as a step.
- :mod:`stepline.steps.sklearn`: scikit-learn estimators as steps (imported on demand).

Import each module by its path; this package imports none of them.
"""
