"""The optimisation history of a study as a PNG: each complete trial's score and the best so far.

Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, not through ``pyplot``: no global
figure state, no backend switch in the user's process, safe from any thread. (Optuna's own
``optuna.visualization.matplotlib`` plots go through ``pyplot`` and are experimental.)
"""
from __future__ import annotations

from pathlib import Path


def plot_history(study, path: Path) -> Path:
    """Write the history of ``study`` (maximized) to ``path`` as a PNG; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    best, best_so_far = None, []
    for value in values:
        best = value if best is None else max(best, value)
        best_so_far.append(best)
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(numbers, values, s=14, label="trial score", color="tab:blue", alpha=0.7)
    axes.step(numbers, best_so_far, where="post", label="best so far", color="tab:red")
    axes.set_xlabel("trial")
    axes.set_ylabel("score (greater is better)")
    axes.set_title(f"optimisation history of {study.study_name}")
    axes.grid(alpha=0.3)
    if numbers:
        axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
