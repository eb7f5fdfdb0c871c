"""Moments derived from streaming power sums (numpy only): one definition for the extraction,
which stores them beside the sums, and for the statistics tables, which read them back."""

from __future__ import annotations

from typing import Any

import numpy as np

DERIVED_MOMENTS = {  # name -> (long_name, power of the values' units; 0: dimensionless)
    "variance": ("variance (population: m2 / n)", 2),
    "stdev": ("standard deviation (population: sqrt(m2 / n))", 1),
    "skewness": ("skewness (m3 / n) / (m2 / n)^1.5, as scipy.stats.skew", 0),
    "kurtosis": ("excess kurtosis (m4 / n) / (m2 / n)^2 - 3, as scipy.stats.kurtosis (Fisher)", 0),
}


def derived_moments(n: Any, m2: Any, m3: Any, m4: Any) -> dict[str, Any]:
    """Variance, standard deviation, skewness and excess kurtosis (``DERIVED_MOMENTS``) from a count
    and the central moment sums m2..m4 (numpy or xarray): the population (biased) estimators, what
    ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` give with their defaults; NaN where n is 0
    or the values are constant."""
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / n
        return {
            "variance": var,
            "stdev": np.sqrt(var),
            "skewness": (m3 / n) / var**1.5,
            "kurtosis": (m4 / n) / var**2 - 3.0,
        }
