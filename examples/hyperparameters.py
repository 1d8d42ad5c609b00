"""Declare a hyperparameter space on a pipeline, sample it, apply it, save, inspect what was saved.

Run: ``python examples/hyperparameters.py``.
"""
import json
import tempfile

import numpy as np

from stepline import CX, Pipeline
from stepline.hyperparams.distributions import LogUniform, RandInt
from stepline.hyperparams.space import HyperparameterSpace
from stepline.saving.inspect import describe_tree
from stepline.steps.numpy import AddN, MultiplyByN

pipeline = Pipeline([
    ("scale", MultiplyByN(1)),
    ("inner", Pipeline([("shift", AddN(0)), ("b", MultiplyByN(2))])),
], name="tuned")

# A space per step, given nested or flat ("inner__b__multiply_by").
pipeline.set_hyperparams_space(HyperparameterSpace({
    "scale": {"multiply_by": LogUniform(0.1, 10.0)},
    "inner__shift__add": RandInt(-5, 5),
    "inner__b__multiply_by": RandInt(1, 4),
}))
space = pipeline.get_hyperparams_space()
print("space:", space.to_flat_dict())

sample = space.rvs(random_state=42)          # reproducible with a seed or a numpy Generator
pipeline.set_hyperparams(sample)             # each value is routed to its step by path
print("applied:", pipeline.get_hyperparams().to_flat_dict())
print("outputs:", pipeline.transform(np.arange(3.0)).tolist())

# Spaces and samples round-trip through JSON, distributions included.
assert HyperparameterSpace.from_json(space.to_json()) == space
print("space as JSON:", json.loads(space.to_json())["inner"]["b"])

with tempfile.TemporaryDirectory() as root:
    pipeline.save(CX(root), full_dump=True)
    print("\n".join(describe_tree(f"{root}/tuned")))   # what `stepline inspect` prints
    manifest = json.load(open(f"{root}/tuned/inner/b/stepline.json"))
    assert manifest["hyperparams"]["multiply_by"] == sample["inner__b__multiply_by"]
