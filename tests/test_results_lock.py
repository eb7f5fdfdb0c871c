"""One writer per results folder (dnndist.results_lock): the lock is held while its process
lives, refused to others with the holder named, and free again once the holder dies, however."""

from __future__ import annotations

import signal

import pytest

from dnndist.results_lock import LOCK_FILE, ResultsInUse, lock_results_dir

from .conftest import hold_results_lock


@pytest.mark.slow
def test_the_lock_is_refused_while_held_and_free_after_a_kill_9(tmp_path):
    results = tmp_path / "results"
    holder = hold_results_lock(results)
    try:
        with pytest.raises(
            ResultsInUse, match=rf"results folder .* is in use by another workflow \(pid {holder.pid} on "
        ):
            lock_results_dir(results)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_results_dir(results)  # the kernel released it with the process: nothing stale
    lock_results_dir(results / "x" / "..")  # the same folder again, in the process that holds it: no-op
    assert (results / LOCK_FILE).is_file()
