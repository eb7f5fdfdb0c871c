"""dnndist: measured distributions of weights, features and gradients in deep networks.

``dnndist.analyze(model, inputs=None, ...)`` measures one model as the workflow measures its runs
(see ``dnndist.analysis``); ``dnndist.Recorder(model, out, ...)`` records any training loop
(``dnndist.recorder``), ``dnndist.report(runs, out)`` reports on recorded runs and
``dnndist.open_results(out, "weights")`` opens a results folder's stores in a notebook. Each is
imported on first use, so ``import dnndist`` stays light (no torch).
"""

import warnings

__version__ = "0.1.0"
__all__ = ["Analysis", "DnndistError", "Recorder", "__version__", "analyze", "open_results", "report"]
_LAZY = {
    "analyze": "dnndist.analysis",
    "Analysis": "dnndist.analysis",
    "Recorder": "dnndist.recorder",
    "open_results": "dnndist.io",
    "report": "dnndist.recorded",
}


# Snakemake marks a finished directory output with a `.snakemake_timestamp` file; in a zarr store
# zarr warns about it on every listing (a ZarrUserWarning per store and run). It is not damage.
SNAKEMAKE_MARKER_WARNING = r"Object at \.snakemake_timestamp is not recognized as a component of a Zarr hierarchy"


def ignore_snakemake_marker() -> None:
    """Silence zarr's warning about Snakemake's marker file (and nothing else); done on import."""
    warnings.filterwarnings("ignore", message=SNAKEMAKE_MARKER_WARNING, category=UserWarning)


ignore_snakemake_marker()


class DnndistError(Exception):
    """An error caused by user input (config, files, data): reported without a traceback."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
