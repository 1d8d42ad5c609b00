"""A scikit-learn scaler and a PyTorch MLP in one stepline pipeline: train, save, load elsewhere.

The MLP class is defined here, in ``__main__``: the dump stores it by value, so the fresh
process that loads the pipeline below never sees this file. The weights travel as
safetensors + JSON (no pickled module). Run: ``python examples/torch_pipeline.py`` (needs ``pip install 'stepline[sklearn,torch]'``).
"""
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler
from torch import nn

from stepline import CX, Pipeline
from stepline.hyperparams.distributions import Choice, LogUniform, RandInt
from stepline.steps.sklearn import SKLearnWrapper
from stepline.torch import TorchStep


class MLP(nn.Module):
    """A small multi-layer perceptron; its width and depth are hyperparameters of the step."""

    def __init__(self, in_features, hidden_size=32, n_hidden=2, out_features=1):
        super().__init__()
        layers, width = [], in_features
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            width = hidden_size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def make_data(n=600, seed=0):
    """A non-linear regression with badly scaled features (the scaler matters)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    y = np.sin(2 * z[:, 0]) + 0.5 * z[:, 1] ** 2 - z[:, 2] + 0.05 * rng.normal(size=n)
    X = z * np.array([1000.0, 0.01, 5.0]) + np.array([5e4, -3.0, 10.0])
    return X, y


LOADER = """
import sys
import numpy as np
from stepline import CX
root, x_path, out_path = sys.argv[1:]
pipeline = CX(root).load("torch_pipeline")       # no MLP class in this process
np.save(out_path, pipeline.transform(np.load(x_path)))
print("fresh process: loaded", [name for name in pipeline.keys()])
"""


def main():
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # one progress line per epoch
    X, y = make_data()
    mlp = TorchStep(
        MLP, module_kwargs={"in_features": 3, "hidden_size": 32, "n_hidden": 2},
        hyperparams={"epochs": 25, "batch_size": 32, "learning_rate": 3e-3, "seed": 0,
                     "validation_split": 0.2, "early_stopping_patience": 5},
        hyperparams_space={"learning_rate": LogUniform(1e-4, 1e-1), "hidden_size": Choice([16, 32, 64]),
                           "n_hidden": RandInt(1, 3)},
        name="mlp")
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), mlp], name="torch_pipeline")
    print("hyperparameter space of the pipeline:", sorted(pipeline.get_hyperparams_space().keys()))

    print("training:")
    pipeline, predictions = pipeline.fit_transform(X, y)
    mse = float(np.mean((predictions.ravel() - y) ** 2))
    print(f"train MSE {mse:.4f} (variance of y {np.var(y):.4f}), "
          f"{len(pipeline['mlp'].history_)} epochs")

    workdir = Path(tempfile.mkdtemp(prefix="stepline-torch-example-"))
    try:
        pipeline.save(CX(workdir / "dump"), full_dump=True)
        folder = workdir / "dump" / "torch_pipeline" / "mlp"
        files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        print("saved the MLP step as:", files)
        manifest = json.loads((folder / "stepline.json").read_text())
        print("  its manifest records hidden_size =", manifest["hyperparams"]["hidden_size"],
              "and n_hidden =", manifest["hyperparams"]["n_hidden"])

        np.save(workdir / "X.npy", X)
        result = subprocess.run([sys.executable, "-c", LOADER, str(workdir / "dump"), str(workdir / "X.npy"),
                                 str(workdir / "out.npy")], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise SystemExit(f"the loading process failed:\n{result.stderr}")
        print(result.stdout.strip())
        reloaded = np.load(workdir / "out.npy")
        same = np.array_equal(reloaded, pipeline.transform(X))
        print("same predictions after loading in a fresh process:", same)
        if not same:
            raise SystemExit("predictions differ after loading")
    finally:
        pipeline.teardown()  # frees the model (and the GPU memory, on a GPU)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
