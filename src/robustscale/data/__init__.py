"""Datasets: CIFAR-10/100 and SVHN from disk, scikit-learn's digits embedded, synthetic npz memory-mapped.

Images are kept as uint8 NHWC arrays (the distributed format) until a batch is formed; models see float NCHW in
[0, 1], and normalisation lives inside the model, so eps is in pixel units everywhere. The CIFAR batches are pickles
and are read with a restricted unpickler (:mod:`robustscale.data.safe_pickle`): a dataset file executes nothing.
"""

from robustscale.data.augment import random_crop_flip
from robustscale.data.mixing import MixedBatchSampler, step_generator
from robustscale.data.splits import (VAL_SPLIT_SEED, DataBundle, load_arrays, load_data, load_train_data,
                                     split_validation, to_float)
from robustscale.data.synthetic import load_synthetic, save_synthetic
from robustscale.datasets import DatasetInfo, dataset_info

__all__ = ["DataBundle", "DatasetInfo", "MixedBatchSampler", "dataset_info", "load_arrays", "load_data",
           "load_train_data", "load_synthetic", "save_synthetic", "random_crop_flip", "split_validation",
           "step_generator", "to_float", "VAL_SPLIT_SEED"]
