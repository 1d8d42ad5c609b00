"""The seed page's "Saving Example", "Full Dump Saving" and "Full Dump Loading", run as a script.

The code is the seed's, with ``neuraxle`` replaced by ``stepline`` in the imports. Three
things differ, each marked ``# (not in the seed)``: the cache folder lives in a temporary
folder (so the script runs from any working directory and leaves nothing behind), the
notebook's ``!find`` shell line is done in Python, and the loaded pipeline's outputs are
printed too (the seed transforms ``pipeline`` again after loading).

    python examples/seed_saving_example.py
"""
import os  # (not in the seed)
import tempfile  # (not in the seed)

from sklearn.linear_model import LogisticRegression
from stepline.base import BaseSaver, BaseStep, NonFittableMixin, ExecutionContext
from stepline.pipeline import Pipeline
from stepline.steps.flow import TrainOnlyWrapper
from stepline.steps.output_handlers import OutputTransformerWrapper
from stepline.steps.sklearn import SKLearnWrapper
from stepline.steps.data import DataShuffler
from stepline.hyperparams.space import HyperparameterSamples, HyperparameterSpace
from stepline.hyperparams.distributions import LogUniform, Boolean, Choice, RandInt
import numpy as np
import shutil


class NumpyRavel(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        if data_inputs is None:
            return data_inputs

        data_inputs = data_inputs if isinstance(data_inputs, np.ndarray) else np.array(data_inputs)
        return data_inputs.ravel()


PIPELINE_NAME = 'saved_pipeline_name'
work_dir = tempfile.mkdtemp(prefix="stepline-seed-")  # (not in the seed)
cache_folder = os.path.join(work_dir, 'cache_folder')  # the seed: cache_folder = 'cache_folder'

pipeline = Pipeline([
    TrainOnlyWrapper(DataShuffler()),
    OutputTransformerWrapper(NumpyRavel()),
    SKLearnWrapper(LogisticRegression(), HyperparameterSpace({
        'C': LogUniform(0.01, 10.0),
        'fit_intercept': Boolean(),
        'dual': Boolean(),
        'penalty': Choice(['l1', 'l2']),
        'max_iter': RandInt(20, 200)
    }))
], cache_folder=cache_folder).set_name(PIPELINE_NAME)

data_inputs = np.expand_dims(np.array([0, 1, 2, 3]), axis=-1)
expected_outputs = np.expand_dims(np.array([0, 2, 4, 6]), axis=-1)
pipeline, outputs = pipeline.fit_transform(data_inputs, expected_outputs)
print('outputs: {}'.format(outputs))

# Full Dump Saving

pipeline.save(ExecutionContext(cache_folder), full_dump=True)
print('saved pipeline ! ')

# !find . | grep "cache_folder/*"   (not in the seed: the same listing, in Python)
for folder, _, files in sorted(os.walk(cache_folder)):
    for file_name in sorted(files):
        print(os.path.relpath(os.path.join(folder, file_name), work_dir))

# Full Dump Loading

loaded_pipeline = ExecutionContext(cache_folder).load(PIPELINE_NAME)
print('loaded pipeline without any source code !')
outputs = pipeline.transform(data_inputs)
print('outputs: {}'.format(outputs))

loaded_outputs = loaded_pipeline.transform(data_inputs)  # (not in the seed)
print('loaded pipeline outputs: {}'.format(loaded_outputs))
assert np.array_equal(loaded_outputs, outputs)

shutil.rmtree(work_dir)  # (not in the seed: clean up)
