"""Trusted dumps: what loads on another machine, what is refused, and the override.

Saves a scikit-learn pipeline (signed with this user's key), then loads it as a machine
with no key would (another STEPLINE_HOME): it loads untrusted, because everything it needs
is on the allow-list. A step class defined in ``__main__`` travels as code, so there it is
refused with ``UntrustedDumpError`` until the user trusts the dump.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stepline import CX, Pipeline
from stepline.base import BaseStep
from stepline.steps.sklearn import SKLearnWrapper
from stepline.trust import UntrustedDumpError
from stepline.trust.signing import verify_dump
from stepline.trust.store import add_digest


class Doubler(BaseStep):
    """Defined in __main__: saved by value, as code."""

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * 2


def main():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5))
    y = (X[:, 0] > 0).astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dumps"
        Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(PCA(n_components=2)),
                  SKLearnWrapper(LogisticRegression())], name="model").fit(X, y).save(CX(root), full_dump=True)
        Pipeline([Doubler()], name="custom").save(CX(root), full_dump=True)
        print("here:", verify_dump(root / "model").reason)

        os.environ["STEPLINE_HOME"] = str(Path(tmp) / "another-machine")  # no key, empty trust store
        print("another machine:", verify_dump(root / "model").reason)
        model = CX(root).load("model")  # untrusted, yet everything it needs is allowed
        print("loaded untrusted, predictions:", model.predict(X[:5]).tolist())
        try:
            CX(root).load("custom")
        except UntrustedDumpError as error:
            print("refused:", str(error).splitlines()[1].strip())
        add_digest(verify_dump(root / "custom").root_digest)  # what `stepline trust PATH` does
        print("after trusting it:", CX(root).load("custom").transform([1, 2]).tolist())


if __name__ == "__main__":
    main()
