"""``analyze``: the workflow's statistics of one model, in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dnndist.analysis.model import STATS_DEFAULTS, layer_specs
from dnndist.analysis.options import _device, _load, _Options, _settings
from dnndist.analysis.passes import _features, _weight_analysis
from dnndist.analysis.result import Analysis
from dnndist.analysis.views import per_layer_dataset, per_layer_table


# --------------------------------------------------------------------------- analyze
def analyze(
    model: Any,
    inputs: Any = None,
    *,
    weights: str | Path | None = None,
    init: str | None = None,
    gain: str | float = "torch",
    bias: str = "auto",
    activation: str = "relu",
    num_classes: int | None = None,
    in_channels: int = 3,
    image_size: int | None = None,
    resize: int | None = None,
    normalize: str = "dataset",
    per_class: int | None = None,
    max_inputs: int | None = None,
    batch_size: int = 256,
    sample_size: int = 16,
    histogram_bins: int = 100,
    kinds: Sequence[str] = ("pre", "post"),
    emission: bool = True,
    gradient_inputs: int = 64,
    gradient_batch_size: int = 32,
    gradient_target: str = "auto",
    gradient_split: str | None = None,
    near_zero: Sequence[float] = STATS_DEFAULTS["near_zero"],
    near_zero_rel: Sequence[float] = STATS_DEFAULTS["near_zero_rel"],
    model_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    workers: int | None = None,
    channels_last: bool = True,
    tables: bool = True,
) -> Analysis:
    """The workflow's statistics of one model (see the module docstring). ``model``: an ``nn.Module``, a
    registry name or ``torchvision:<name>`` (``load_model``); ``weights``: a local state dict loaded into it.
    ``inputs`` (optional): an image folder or .tar.gz (``<class>/<image>`` or ``<split>/<class>/<image>``;
    decoded at ``image_size``, default 224 for torchvision models and 32 otherwise, and normalised by
    ``normalize``: dataset, imagenet or none), a tensor of model inputs, or a DataLoader yielding x or (x, y);
    with them, feature statistics over at most ``max_inputs`` inputs per split (``kinds``: pre, post) and, for
    conv layers, emission / absorption of the first ``gradient_inputs`` inputs (``emission``) of the split
    ``gradient_split`` (default: the first) against the labels (``gradient_target`` label; auto: when the
    inputs have labels the model can output, else its own prediction). ``init``, ``gain``, ``bias``,
    ``activation``: the init the weights are compared with (``init_std``, ``std_ratio_to_init``; ``init``
    default: the checkpoint's own, else torch_default, with the weights labelled init ``unknown``). The model
    is used in eval mode on ``device`` (default: where its parameters are) and left as it was; with
    ``channels_last`` (default, as the workflow's ``train.channels_last``) its features and gradients are
    computed on a copy in that memory format (faster on a CPU, and the workflow's numbers exactly).
    ``tables=False``: the stores only, no tables or views (``dnndist.Recorder``'s record points)."""
    opts = _Options.of(locals())
    opts.check()
    module, name = _load(model, num_classes, in_channels, opts)
    settings, origin, label = _settings(opts, name)
    dev = _device(module, device)
    result = _weight_analysis(module, layer_specs(module), name, settings, origin, label, tables)
    if inputs is not None:
        _features(result, module, inputs, origin, dev, opts)
    if tables:
        result.table = per_layer_table(result)
        result.dataset = per_layer_dataset(result)
    return result
