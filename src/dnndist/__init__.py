"""dnndist: measured distributions of weights, features and gradients in deep networks.

``dnndist.analyze(model, inputs=None, ...)`` measures one model as the workflow measures its runs
(see ``dnndist.analysis``); it is imported on first use, so ``import dnndist`` stays light (no torch).
"""

__version__ = "0.1.0"
__all__ = ["Analysis", "DnndistError", "__version__", "analyze"]
_LAZY = {"analyze": "dnndist.analysis", "Analysis": "dnndist.analysis"}


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
