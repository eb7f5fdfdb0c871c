"""dnndist.io's atomic writes: a killed writer's temporaries are removed by the next write of
the same output, a live writer's are not."""

from __future__ import annotations

import os
import subprocess
import sys

from dnndist.io import atomic_path, write_bytes


def test_the_next_write_removes_a_killed_writers_temporaries_only(tmp_path):
    out = tmp_path / "gradients.zarr"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process that has ended
    stale_dir = tmp_path / f".gradients.zarr.tmp-{dead_pid}-0123abcd"
    (stale_dir / "conv1").mkdir(parents=True)
    (stale_dir / "conv1" / "c0").write_bytes(b"half a chunk")
    legacy = tmp_path / ".gradients.zarr.tmp-0a1b2c3d"  # written before the pid was in the name
    legacy.write_bytes(b"x")
    live = tmp_path / f".gradients.zarr.tmp-{os.getpid()}-89abcdef"  # this process: writing now
    live.mkdir()
    other = tmp_path / f".features.zarr.tmp-{dead_pid}-0123abcd"  # another output's: not this write's business
    other.mkdir()
    with atomic_path(out) as tmp:
        assert tmp.name.startswith(f".gradients.zarr.tmp-{os.getpid()}-")
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert not stale_dir.exists() and not legacy.exists()
    assert live.is_dir() and other.is_dir() and (out / "zarr.json").is_file()
    write_bytes(tmp_path / "a.csv", b"1\n")  # a file output: no temporary left beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".a.csv")) == []
