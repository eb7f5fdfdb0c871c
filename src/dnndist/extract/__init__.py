"""Extraction stage: a run's checkpoints -> three zarr-backed xarray datasets. The rooms: ``store``
(what every extractor shares), ``weights``, ``inputs``, ``features``, ``gradients``, ``run``.

Each store has the run dimensions (variant, init, seed; length 1 here) and ``epoch``, so
the stores of all runs combine lazily into one dataset per kind (``dnndist.io.open_results``).
Every store is written to a temporary path and renamed: a killed job leaves nothing
that looks complete.

- ``weights.zarr``: per layer group (conv1, ..., fc2) the ``weight`` and ``bias`` at every
  checkpoint epoch with named tensor dims, plus fan_in/fan_out and the init's theoretical
  std and bound; the root holds per-layer tables and the ``diverged`` flag.
- ``features.zarr``: root: exact streaming statistics (``n``, ``mu``, central moment sums
  m2..m4, ``vmin``, ``vmax``, the derived ``variance``, ``stdev``, ``skewness``, ``kurtosis``
  (excess), a fixed-bin histogram ``hist`` with its edges ``bin_lo``/``bin_hi`` and
  under/overflow; ``dnndist.streaming``) of every
  analysed layer's pre- and post-activation output over all inputs of each split (train, valid, random);
  per layer group: raw activations of a seeded sample of inputs (the same for all runs).
- ``gradients.zarr``: over seeded labelled batches, per-sample loss, parameter gradients
  (and per-batch norms), gradients w.r.t. each analysed feature map, and emission ``em``
  (sample, out_channel) / absorption ``ab`` (sample, in_channel) of every conv layer.

Gradients are of the per-sample cross-entropy (model in eval mode, so samples are
independent); parameter gradients are divided by the batch size, i.e. those of the
mean loss that training uses."""

from dnndist.extract.features import (
    BIN_EDGES,
    FEATURE_STATS,
    FEATURE_VARIABLES,
    FeatureArrays,
    extract_features,
    feature_modules,
    feature_pass,
)
from dnndist.extract.gradients import (
    PARAMS,
    GradientArrays,
    GradientPass,
    GradientPlan,
    extract_gradients,
    gradient_batch,
    gradient_plan,
    gradient_recorder,
)
from dnndist.extract.inputs import (
    Inputs,
    Recorder,
    extraction_setup,
    load_inputs,
)
from dnndist.extract.run import (
    EXTRACTORS,
    extract_run,
)
from dnndist.extract.store import (
    NORM_UNITS,
    PARAM_GRADIENT_UNITS,
    RUN_CHUNKED,
    SPLIT_ORDER,
    TABLE_UNITS,
    WHOLE_BYTES,
    best_epoch_of,
    build_model,
    checkpoint_files,
    chunk_shape,
    extract_epochs,
    finish,
    layer_coords,
    load_weights,
    log,
    store_attrs,
    write_store,
)
from dnndist.extract.weights import (
    WEIGHT_TABLE,
    extract_weights,
    weight_groups,
)

__all__ = [
    "BIN_EDGES",
    "EXTRACTORS",
    "FEATURE_STATS",
    "FEATURE_VARIABLES",
    "FeatureArrays",
    "GradientArrays",
    "GradientPass",
    "GradientPlan",
    "Inputs",
    "NORM_UNITS",
    "PARAMS",
    "PARAM_GRADIENT_UNITS",
    "RUN_CHUNKED",
    "Recorder",
    "SPLIT_ORDER",
    "TABLE_UNITS",
    "WEIGHT_TABLE",
    "WHOLE_BYTES",
    "best_epoch_of",
    "build_model",
    "checkpoint_files",
    "chunk_shape",
    "extract_epochs",
    "extract_features",
    "extract_gradients",
    "extract_run",
    "extract_weights",
    "extraction_setup",
    "feature_modules",
    "feature_pass",
    "finish",
    "gradient_batch",
    "gradient_plan",
    "gradient_recorder",
    "layer_coords",
    "load_inputs",
    "load_weights",
    "log",
    "store_attrs",
    "weight_groups",
    "write_store",
]
