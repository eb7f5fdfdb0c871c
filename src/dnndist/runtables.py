"""The statistics stage of the runs: every per-run table of ``dnndist.outputs`` (``run_tables()``)
from a run's verified stores, for one run or several in one process or a few (``dnndist
stats-run`` and ``stats-runs``; the rule ``stats_runs_<variant>``). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnndist import DnndistError, integrity, outputs
from dnndist.settings import StatsSettings


def run_table_functions(
    groups: dict[str, Any],
    features: Any,
    grad_groups: dict[str, Any],
    epochs: list[int],
    settings: StatsSettings,
    *,
    computed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How each per-run table of ``dnndist.outputs`` (``run_tables()``) is computed from a run's
    opened stores: name -> a function of no arguments returning the table (its ``StatsTable.compute``
    of the run's ``stats.RunStores``). ``computed``: tables already computed, by name (the weights and
    spectrum tables, with the variant's other runs': ``stats.weight_and_spectrum_tables``)."""
    from dnndist import stats

    run = stats.RunStores(groups, features, grad_groups, epochs, settings)
    done = dict(computed or {})
    return {
        t.name: (lambda t=t: done[t.name]) if t.name in done else (lambda t=t: t.function()(run))
        for t in outputs.STATS
        if t.per_run
    }


def open_run_stores(weights: Path, features: Path, gradients: Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A run's three stores, verified (every chunk read once) and opened lazily: the weights'
    layer groups, the features' root, the gradients' conv layer groups (emission, absorption)."""
    from dnndist import stats
    from dnndist.io import layer_groups, open_store_lazily

    for store in (weights, features, gradients):
        integrity.verify_store(store)
    # old-layout stores (features named count/mean/min/max) open under the current names; of the
    # gradients, the tables read the conv layers' emission and absorption
    grad_groups = {
        layer: open_store_lazily(gradients, layer, dask=False) for layer in layer_groups(gradients, stats.EMISSION)
    }
    return stats.open_layer_groups(weights), open_store_lazily(features, dask=False), grad_groups


def write_run_tables(stores: list[tuple[Path, Path, Path]], out_dirs: list[Path], settings: StatsSettings) -> None:
    """Every per-run table of several runs (weights, features, gradients stores each) into each
    run's ``out_dir``/<table>.csv, in one process: the imports, the reference bands of
    ``stats.gaussian_reference`` (cached per size) and the weight statistics and spectra (vectorised
    over the runs' tensors) are shared; each table is what ``stats-run`` writes for the run alone."""
    from dnndist import stats
    from dnndist.io import write_text

    opened = [open_run_stores(*paths) for paths in stores]
    weight_tables = stats.weight_and_spectrum_tables([groups for groups, _, _ in opened], settings)
    for (lazy, features, grad_groups), (weights, spectrum), out in zip(opened, weight_tables, out_dirs):
        groups = {layer: ds.compute() for layer, ds in lazy.items()}  # read once (a run's, then freed), not per epoch
        epochs = [int(e) for e in next(iter(groups.values()))["epoch"].values]
        computed = {"weights": weights, "spectrum": spectrum}
        compute = run_table_functions(groups, features, grad_groups, epochs, settings, computed=computed)
        for name in outputs.run_tables():  # what the workflow expects of every run
            write_text(Path(out) / f"{name}.csv", compute[name]().to_csv(index=False))


def _balanced(items: list[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def write_runs(dirs: list[Path], settings: StatsSettings, workers: int) -> None:
    """Every per-run table of the runs in ``dirs`` (each holding weights.zarr, features.zarr and
    gradients.zarr) into ``<dir>/stats``, shared by ``workers`` processes (contiguous, balanced
    parts); each run's tables do not depend on which process computes them."""
    stores = [(d / "weights.zarr", d / "features.zarr", d / "gradients.zarr") for d in dirs]
    parts = _balanced(list(range(len(dirs))), min(workers, len(dirs)))
    jobs = [([stores[i] for i in part], [dirs[i] / "stats" for i in part]) for part in parts]
    if len(jobs) == 1:
        write_run_tables(*jobs[0], settings)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # the other parts in fresh processes (spawn: nothing of this one's threads or state), the first
    # here; each run's tables do not depend on which process computes them (one BLAS thread each)
    pool = ProcessPoolExecutor(len(jobs) - 1, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(write_run_tables, *job, settings) for job in jobs[1:]]
        write_run_tables(*jobs[0], settings)
        for future in futures:
            future.result()
    except BrokenProcessPool:
        raise DnndistError("a statistics worker process died (out of memory?); rerun with --workers 1") from None
    finally:
        pool.shutdown(cancel_futures=True)  # on an error here, without waiting for the other parts
