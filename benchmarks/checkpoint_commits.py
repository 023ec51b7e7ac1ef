"""Checkpoint commits: the in-place protocol of mfld 0.2 against the copy-on-write of 0.1, side by side.

Both write the same frames (N particles in dimension p, random positions, a noise state and
nine observables per frame) to a fresh file, one commit per frame, each commit crash-safe:

* ``copy`` (0.1): copy the whole file, append the frame to the copy, fsync, ``os.replace``;
  a commit costs the whole file, so the bytes written grow with the square of the frames.
* ``in place`` (0.2, :mod:`mfld.storage.commit`): rows preallocated for the planned frames at
  the first commit; each commit writes its rows, fsyncs, writes the count, fsyncs.

Per case it prints the mean time of a commit and of the last one, the bytes the process
handed to the kernel (``wchar``) and the bytes that reached the block device
(``write_bytes``), both from ``/proc/self/io``, and the ratio of written bytes to the final
file size (the goal: at most 1.5). A copy-on-write case whose bytes would pass
``--max-copy-gb`` is skipped, and its bytes predicted from the quadratic law.

    python benchmarks/checkpoint_commits.py                        # N = 1e4 and 1e6; 10, 100, 1000 frames
    python benchmarks/checkpoint_commits.py --sizes 10000 --frames 10 100
    python benchmarks/checkpoint_commits.py --dir /scratch         # where the files go (deleted after)
    python benchmarks/checkpoint_commits.py --checksum             # in place with Fletcher-32 checksums

Run it with nothing else writing to the disk.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from mfld.discretizations.state import ParticleState
from mfld.storage import CheckpointStore
from mfld.storage.commit import replace

P = 3  # parameter dimension: d = 2 inputs and a bias
OBSERVABLES = (
    "objective",
    "G",
    "entropy",
    "U",
    "second_moment",
    "kernel_alignment",
    "degrees_of_freedom",
    "train_loss",
    "test_loss",
)
CONFIG = "seed = 0\n"


def io() -> tuple[int, int]:
    """``(wchar, write_bytes)`` of this process so far."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def frames_of(N: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N, P))
    for k in range(count):
        W[k % N] += 1.0  # a different frame each time, without drawing N x P normals per frame
        yield k, W, {name: float(rng.normal()) for name in OBSERVABLES}


def in_place(path: Path, N: int, count: int, checksum: bool = False) -> list[float]:
    store = CheckpointStore.create(path, CONFIG, {}, "particles", P, frames=count, records=count, checksum=checksum)
    times = []
    for k, W, values in frames_of(N, count):
        store.add_observables(k, 0.1 * k, values)
        t = time.perf_counter()
        store.commit(ParticleState(W, k, 0.1 * k, json.dumps({"stream": "keyed-philox", "seed": 0})))
        times.append(time.perf_counter() - t)
    return times


def _append(group: h5py.Group, name: str, step: int, value: object, shape: tuple[int, ...], dtype: object) -> None:
    if name not in group:
        el = group.create_group(name)
        el.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(256,))
        el.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(256,))
        el.create_dataset(
            "value", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(1, *shape) if shape else (256,)
        )
    el = group[name]
    k = el["step"].shape[0]
    for part in ("step", "time", "value"):
        el[part].resize(k + 1, axis=0)
    el["step"][k], el["time"][k], el["value"][k] = step, 0.1 * step, value


def copy_on_write(path: Path, N: int, count: int) -> list[float]:
    """mfld 0.1's commit: the same frames appended to a copy of the whole file that then replaces it."""
    CheckpointStore.create(path, CONFIG, {}, "particles", P)
    times = []
    for k, W, values in frames_of(N, count):

        def edit(f: h5py.File, k: int = k, W: np.ndarray = W, values: dict = values) -> None:
            group = f.require_group("particles/mu")
            _append(group, "position", k, W, W.shape, W.dtype)
            _append(group, "rng_state", k, json.dumps({"stream": "keyed-philox", "seed": 0}), (), h5py.string_dtype())
            for name, v in values.items():
                _append(f["observables"], name, k, v, (), np.float64)

        t = time.perf_counter()
        replace(path, edit, size=W.nbytes, copy=True)
        times.append(time.perf_counter() - t)
    return times


def measure(protocol, folder: Path, N: int, count: int) -> dict[str, float]:
    path = folder / f"bench-{N}-{count}.h5"
    before = io()
    times = protocol(path, N, count)
    after = io()
    size = path.stat().st_size
    path.unlink()
    wchar, written = after[0] - before[0], after[1] - before[1]
    return {
        "mean": float(np.mean(times)),
        "last": times[-1],
        "wchar": wchar,
        "written": written,
        "size": size,
        "ratio": max(wchar, written) / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="particle counts N")
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 100, 1000], help="frames per run")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temporary one)")
    parser.add_argument(
        "--max-copy-gb",
        type=float,
        default=20.0,
        help="skip copy-on-write cases that would write more than this (predicted)",
    )
    parser.add_argument("--max-file-gb", type=float, default=30.0, help="skip cases whose file is larger")
    parser.add_argument(
        "--checksum",
        action="store_true",
        help="in place with output.checksum (HDF5 writes every preallocated chunk once at creation)",
    )
    args = parser.parse_args()
    ours = functools.partial(in_place, checksum=args.checksum)
    folder = Path(tempfile.mkdtemp(prefix="mfld-bench-", dir=args.dir))
    gb = 2.0**30
    print(f"p = {P}; one commit per frame; files in {folder} (free: {shutil.disk_usage(folder).free / gb:.0f} GiB)")
    print(
        f"{'N':>9} {'frames':>6} | {'protocol':>8} {'ms/commit':>10} {'last ms':>9} {'wchar GiB':>10} "
        f"{'disk GiB':>9} {'file GiB':>9} {'written/file':>12}"
    )
    try:
        for N in args.sizes:
            for count in args.frames:
                frame = N * P * 8
                if count * frame > args.max_file_gb * gb:
                    print(f"{N:>9} {count:>6} | skipped: the file would be {count * frame / gb:.0f} GiB")
                    continue
                rows = {"in place": measure(ours, folder, N, count)}
                predicted = frame * count * (count + 1) / 2
                if predicted <= args.max_copy_gb * gb:
                    rows["copy"] = measure(copy_on_write, folder, N, count)
                for name, r in rows.items():
                    print(
                        f"{N:>9} {count:>6} | {name:>8} {1e3 * r['mean']:>10.2f} {1e3 * r['last']:>9.2f} "
                        f"{r['wchar'] / gb:>10.3f} {r['written'] / gb:>9.3f} {r['size'] / gb:>9.3f} "
                        f"{r['ratio']:>12.2f}"
                    )
                if "copy" not in rows:
                    print(f"{N:>9} {count:>6} | {'copy':>8} skipped: it would write about {predicted / gb:.0f} GiB")
                else:
                    speed = rows["copy"]["mean"] / rows["in place"]["mean"]
                    volume = rows["copy"]["wchar"] / rows["in place"]["wchar"]
                    print(f"{'':>9} {'':>6} | copy / in place: {speed:.1f}x the time, {volume:.1f}x the bytes")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
