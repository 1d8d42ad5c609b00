"""Exceptions raised by stepline's core: every message names the step or path at fault."""


class SteplineError(Exception):
    """Base class of stepline's own errors."""


class NotFittedError(SteplineError, ValueError, AttributeError):
    """A step that needs fitting was used before it was fitted.

    Subclasses ``ValueError`` and ``AttributeError`` like scikit-learn's error of
    the same name, so code that catches one catches the other.
    """


class InvalidStepNameError(SteplineError, ValueError):
    """A step name is empty, not a string, or would break a path."""


class DuplicateStepNameError(SteplineError, ValueError):
    """Two steps of one pipeline were given the same explicit name."""


class HyperparameterError(SteplineError, ValueError):
    """A hyperparameter name is unknown or its value lies outside its space."""
