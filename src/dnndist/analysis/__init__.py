"""dnndist as a library: the workflow's statistics of any model, in one call. The rooms: ``model``
(loading a model, its layers), ``inputs`` (image folders, tensors, loaders), ``options``, ``passes``
(weights, features, emission/absorption), ``result`` (``Analysis`` and its files), ``views``
(per-layer table and dataset), ``api`` (``analyze``).

    import dnndist
    result = dnndist.analyze(model)                      # any torch.nn.Module
    result = dnndist.analyze("torchvision:resnet18", weights="resnet18.pth", inputs="images/")
    result.table                                         # one row per Conv2d/Linear layer
    result.dataset                                       # the same numbers as an xarray Dataset
    result.write("out/")                                 # weights.zarr (+ features.zarr, gradients.zarr), CSVs, figures

Every ``Conv2d`` and ``Linear`` of the model (``named_modules`` order, which is the depth order)
is a layer. The numbers are those of the workflow, computed by the same functions:

- weights: ``dnndist.extract.weight_groups`` builds the weights store (root + one group per layer,
  what ``dnndist extract weights`` writes for a checkpoint), ``dnndist.stats.weight_table`` its
  statistics (moments, quantiles, near-zero mass, the fractions inside [-1, 1] and inside
  PyTorch's default-init bound 1/sqrt(fan_in), KS distance to the fitted normal, Hill tail index
  with its size-calibrated reference, WeightWatcher's spectral metrics), ``stats.spectrum_table``
  the singular values and ``stats.weight_histograms`` the histograms;
- features (with ``inputs``): ``dnndist.extract.feature_pass`` (the exact streaming moments and
  fixed-bin histograms of ``dnndist.streaming``) and ``extract.FeatureArrays`` build the features
  store; ``stats.feature_table`` / ``stats.feature_histograms`` read it;
- emission / absorption (with ``inputs``, conv layers): ``extract.gradient_batch`` on the first
  ``gradient_inputs`` inputs; ``stats.em_ab_table`` and ``tables.emission_summary`` summarise it.

The workflow compares a layer with the theory of the init it was trained from. A checkpoint of
the workflow (``checkpoints/epoch_NNNN.safetensors``) says which: its metadata's init, seed and
epoch label what ``analyze`` writes, and its init is the reference. Other weights have no known
init: they are labelled ``init = unknown`` and compared with ``init`` (default ``torch_default``,
PyTorch's own U(-1/sqrt(fan_in), 1/sqrt(fan_in))), named as ``reference_init``; ``init_std``,
``init_bound`` and ``std_ratio_to_init`` are relative to the reference. An ``init`` given is
both the label and the reference. ``within_default_bound`` is always the torch-default bound."""

from dnndist.analysis.api import (
    analyze,
)
from dnndist.analysis.inputs import (
    input_splits,
)
from dnndist.analysis.model import (
    ACTIVATIONS,
    INPUT_SPLIT,
    MODEL_DEFAULTS,
    NORMALIZE,
    NORMS,
    STATS_DEFAULTS,
    TORCHVISION,
    layer_specs,
    load_model,
    log,
)
from dnndist.analysis.passes import (
    one_blas_thread,
)
from dnndist.analysis.result import (
    Analysis,
)
from dnndist.analysis.views import (
    LONG_NAMES,
    per_layer_dataset,
    per_layer_table,
)

__all__ = [
    "ACTIVATIONS",
    "Analysis",
    "INPUT_SPLIT",
    "LONG_NAMES",
    "MODEL_DEFAULTS",
    "NORMALIZE",
    "NORMS",
    "STATS_DEFAULTS",
    "TORCHVISION",
    "analyze",
    "input_splits",
    "layer_specs",
    "load_model",
    "log",
    "one_blas_thread",
    "per_layer_dataset",
    "per_layer_table",
]
