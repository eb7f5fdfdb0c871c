"""dnndist: measured distributions of weights, features and gradients in deep networks."""

__version__ = "0.1.0"


class DnndistError(Exception):
    """An error caused by user input (config, files, data): reported without a traceback."""
