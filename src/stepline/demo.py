"""stepline demo: fit, save and reload a small pipeline end to end, in a few seconds.

It builds the pipeline of the "Step Saving & Lifecycle" page (``TrainOnlyWrapper(DataShuffler())``,
``OutputTransformerWrapper(NumpyRavel())``, ``SKLearnWrapper(LogisticRegression(), space)``),
samples its hyperparameters from the space, fits it on iris (bundled with
scikit-learn, no network), prints its outputs on held-out rows, saves a full dump
into ``--out``, loads that dump in a fresh Python process (``python -m stepline.demo
--load PATH``), prints the loaded pipeline's outputs (they must be identical) and the
saved tree as ``stepline inspect`` shows it.

    stepline demo [--out ./stepline_demo] [--seed 0] [-v]
    python -m stepline demo ...

The loader, ``python -m stepline.demo --load PATH``, reads rows as a JSON list of lists
on stdin and prints the loaded step's inference outputs as one JSON list on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path

logger = logging.getLogger("stepline.demo")

PIPELINE_NAME = "demo_pipeline"
N_HELD_OUT = 12
MAX_SAMPLES = 50

# Output lines the tests parse: "<label>: <JSON list>".
BEFORE_LABEL = "outputs before saving (this process)"
AFTER_LABEL = "outputs after loading (fresh process)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="stepline_demo",
                        help="folder to save the dump into (default: ./stepline_demo)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the shuffling, the data split and the hyperparameter sampling")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens in more detail")
    parser.add_argument("--load", metavar="PATH", default=None,
                        help="(loader mode) load the step saved at PATH, transform the JSON rows read "
                             "from stdin in inference mode, print the outputs as JSON")


def _seed(text: str) -> int:
    """A seed for NumPy: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer, 0 or more, got {text!r}")
    return value


# ----------------------------------------------------------------------------- pieces

def build_pipeline(seed: int):
    """DataShuffler, NumpyRavel and LogisticRegression, with a solver that accepts every penalty of its space."""
    from sklearn.linear_model import LogisticRegression

    from stepline.hyperparams.distributions import Boolean, Choice, LogUniform, RandInt
    from stepline.hyperparams.space import HyperparameterSpace
    from stepline.pipeline import Pipeline
    from stepline.steps.data import DataShuffler
    from stepline.steps.flow import TrainOnlyWrapper
    from stepline.steps.numpy import NumpyRavel
    from stepline.steps.output_handlers import OutputTransformerWrapper
    from stepline.steps.sklearn import SKLearnWrapper

    # solver='liblinear': the one solver that takes both penalties of the space ('l1' and
    # 'l2') and dual=True (with 'l2'); it handles the two-class problem the demo fits.
    # random_state: liblinear shuffles in its dual solver, so an unseeded run that stops at
    # max_iter before converging could predict differently from one run to the next.
    return Pipeline([
        TrainOnlyWrapper(DataShuffler(seed=seed)),
        OutputTransformerWrapper(NumpyRavel()),
        SKLearnWrapper(LogisticRegression(solver="liblinear", random_state=seed), HyperparameterSpace({
            "C": LogUniform(0.01, 10.0),
            "fit_intercept": Boolean(),
            "dual": Boolean(),
            "penalty": Choice(["l1", "l2"]),
            "max_iter": RandInt(20, 200),
        })),
    ]).set_name(PIPELINE_NAME)


def load_data(seed: int):
    """Iris, versicolor (1) against virginica (2): ``(X_train, y_train, X_test, y_test)``."""
    import numpy as np
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    keep = y > 0
    X, y = X[keep], y[keep]
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:N_HELD_OUT], order[N_HELD_OUT:]
    # 2-D expected outputs, as in the seed: OutputTransformerWrapper(NumpyRavel()) ravels them
    return X[train], y[train].reshape(-1, 1), X[test], y[test]


def sample_hyperparams(pipeline, X, y, seed: int):
    """Sample from the pipeline's space until scikit-learn accepts the combination and converges.

    Returns ``(samples, refused)``: liblinear refuses some combinations (``dual=True``
    with ``penalty='l1'``) and does not converge within a small sampled ``max_iter`` on
    others; each one is found by fitting a throwaway copy of the estimator, then sampled
    again, so that the demo's own fit warns about nothing.
    """
    import numpy as np
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    space = pipeline.get_hyperparams_space()
    wrapper = pipeline["LogisticRegression"]
    prefix = wrapper.name + "__"
    rng = np.random.default_rng(seed)
    refused = []
    for _ in range(MAX_SAMPLES):
        samples = space.rvs(random_state=rng)
        own = {k[len(prefix):]: v for k, v in samples.items() if k.startswith(prefix)}
        trial = clone(wrapper.wrapped_sklearn_predictor).set_params(**own)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trial.fit(X, y.ravel())
        except ValueError as error:
            logger.debug("scikit-learn refused %s: %s", own, error)
            refused.append(own)
            continue
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.debug("%s does not converge", own)
            refused.append(own)
            continue
        return samples, refused
    raise RuntimeError(f"no accepted hyperparameters in {MAX_SAMPLES} samples")


def _silence_penalty_deprecation() -> None:
    # The seed's space names `penalty`, which scikit-learn >= 1.8 deprecates in favour of
    # `l1_ratio` (and warns about on every fit); it still honours it.
    warnings.filterwarnings("ignore", message=r".*'penalty' was deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Inconsistent values: penalty=", category=UserWarning)


def _fmt_params(samples) -> str:
    return ", ".join(f"{k.rsplit('__', 1)[-1]}={round(v, 4) if isinstance(v, float) else v!r}"
                     for k, v in samples.items())


def _as_list(outputs) -> list:
    return [x.item() if hasattr(x, "item") else x for x in outputs]


def load_in_fresh_process(path: Path, rows) -> list:
    """Run the loader in a new interpreter; return the outputs it printed."""
    command = [sys.executable, "-m", "stepline.demo", "--load", str(path)]
    result = subprocess.run(command, input=json.dumps(rows), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"the loader failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}")
    if result.stderr.strip():
        logger.debug("loader stderr:\n%s", result.stderr.strip())
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_tree(path: Path) -> None:
    try:
        from stepline.saving.inspect import describe_tree
    except ImportError:
        print("   (stepline.saving.inspect is not available: tree not printed)")
        return
    for line in describe_tree(path):
        print("   " + line)


# ----------------------------------------------------------------------------- modes

def run_loader(path: str) -> int:
    """Loader mode: load ``path``, transform the JSON rows from stdin, print JSON outputs."""
    import numpy as np

    from stepline.core.context import ExecutionContext

    folder = Path(path)
    step = ExecutionContext(folder.parent).load(folder.name)
    rows = np.asarray(json.loads(sys.stdin.read()), dtype=float)
    outputs = step.set_train(False).transform(rows)
    print(json.dumps(_as_list(outputs)))
    return 0


def run_demo(out: Path, seed: int) -> int:
    import numpy as np

    from stepline.core.context import ExecutionContext

    _silence_penalty_deprecation()
    started = time.perf_counter()
    X_train, y_train, X_test, y_test = load_data(seed)
    pipeline = build_pipeline(seed)
    print("stepline demo: a pipeline of DataShuffler, NumpyRavel and LogisticRegression, fitted on iris, "
          "saved whole, loaded in a fresh process\n")
    print("1. the pipeline")
    print("\n".join("   " + line for line in repr(pipeline).splitlines()))

    samples, refused = sample_hyperparams(pipeline, X_train, y_train, seed)
    pipeline.set_hyperparams(samples)
    note = (f"; {len(refused)} combination(s) refused by scikit-learn or not converging, resampled"
            if refused else "")
    print(f"\n2. hyperparameters sampled from its space (seed {seed}{note})")
    print(f"   {_fmt_params(samples)}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _silence_penalty_deprecation()
        pipeline, _ = pipeline.fit_transform(X_train, y_train)
    pipeline.set_train(False)  # inference: TrainOnlyWrapper passes data through
    before = _as_list(pipeline.transform(X_test))
    accuracy = float(np.mean(np.asarray(before) == y_test))
    print(f"\n3. fitted on {len(X_train)} iris flowers (1 = versicolor, 2 = virginica); "
          f"inference on {len(X_test)} held-out ones")
    for message in sorted({f"{w.category.__name__}: {w.message}" for w in caught}):
        print(f"   note: scikit-learn warned {message}")
    print(f"   {BEFORE_LABEL}: {json.dumps(before)}")
    print(f"   expected:                              {json.dumps(_as_list(y_test))}")
    print(f"   accuracy: {accuracy:.2f}")

    pipeline.save(ExecutionContext(out), full_dump=True)
    dump = out / PIPELINE_NAME
    files = [p for p in dump.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"\n4. saved a full dump into {dump} ({len(files)} files, {size / 1024:.1f} KiB)")

    print(f"\n5. loaded it in a fresh Python process: {Path(sys.executable).name} -m stepline.demo --load {dump}")
    after = load_in_fresh_process(dump.resolve(), X_test.tolist())
    print(f"   {AFTER_LABEL}: {json.dumps(after)}")
    same = after == before
    print(f"   identical to the outputs before saving: {'yes' if same else 'NO'}")

    print(f"\n6. the saved tree (stepline inspect {dump})")
    print_tree(dump)
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0 if same else 1


def _check_out(out: Path) -> str | None:
    """Why the dump cannot be saved under ``out`` (checked before anything runs), or None."""
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    return f"{blocking}: a file, not a folder: the demo saves its dump into a folder" if blocking else None


def run(args) -> int:
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(name)s: %(message)s")
    if getattr(args, "load", None):
        return run_loader(args.load)
    problem = _check_out(Path(args.out))
    if problem:
        print(f"stepline demo: --out {problem}", file=sys.stderr)
        return 2
    try:
        return run_demo(Path(args.out), args.seed)
    except Exception as error:  # a demo reports failures in one readable line, -v for the traceback
        logger.debug("demo failed", exc_info=True)
        print(f"stepline demo failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepline.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
