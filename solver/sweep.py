"""``mfld sweep``: a grid of configurations run as independent tasks on Dask distributed.

A sweep file is TOML::

    base = "my.toml"              # optional, relative to the sweep file
    out = "sweep-results"         # optional folder (--out overrides)
    [set]                         # overrides shared by every run
    "time.steps" = 500
    [grid]                        # the cartesian product of these lists
    seed = [0, 1, 2]
    "model.lam" = [0.004, 0.01]

Each run writes its own checkpoint ``<out>/<name>.h5``. A finished run is skipped on
rerun, an unfinished one is resumed. A run that fails is reported with its error,
and the others carry on. ``summary.csv`` and ``summary.md`` hold one row per run with its
final observables. The cluster is a ``LocalCluster`` unless ``--scheduler`` names an
existing one.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from mfld.validation.jobs import dask_client

log = logging.getLogger("mfld")
SUMMARY = ("objective", "U", "train_loss", "test_loss", "kernel_alignment", "degrees_of_freedom")


MAX_POINTS = 100_000
"""The most runs one sweep makes (each is a file and a row of results: a grid of 10^6 would spend minutes only
listing them)."""


def read_sweep(path: str | Path) -> tuple[str | None, dict[str, Any], dict[str, list[Any]], str | None]:
    """``(base config path, shared overrides, grid, out folder)`` of a sweep file."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"sweep file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"sweep file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 TOML"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"sweep file {str(path)!r} is not valid TOML: {e}") from None
    unknown = set(spec) - {"base", "out", "set", "grid"}
    if unknown:
        raise ValueError(f"unknown sweep keys {sorted(unknown)}; use base, out, [set] and [grid]")
    grid = spec.get("grid", {})
    if not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError("the sweep needs a [grid] table of non-empty lists, e.g. seed = [0, 1]")
    points = math.prod(len(v) for v in grid.values())
    if points > MAX_POINTS:
        sizes = " x ".join(f"{k} ({len(v)})" for k, v in grid.items())
        raise ValueError(
            f"sweep file {str(path)!r}: its [grid] has {points:,} points ({sizes}), more than the {MAX_POINTS:,} "
            "one sweep runs; split it into several sweep files, or shorten its lists"
        )
    base = spec.get("base")
    if base is not None:
        base = str((path.parent / base).resolve())
    return base, spec.get("set", {}), grid, spec.get("out")


def _toml_value(v: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


def tasks(base: str | None, shared: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One task per point of the grid: its name, parameters and ``--set`` overrides."""
    keys = list(grid)
    out: list[dict[str, Any]] = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        name = "-".join(f"{k.split('.')[-1]}={v}" for k, v in params.items()).replace("/", "_")
        overrides = [f"{k}={_toml_value(v)}" for k, v in {**shared, **params}.items()]
        out.append({"name": name, "params": params, "base": base, "overrides": overrides})
    names = [t["name"] for t in out]
    for t in out:  # readable names can collide (sub/y.csv and sub_y.csv; "model.lam" and "lam"): add the settings' hash
        if names.count(t["name"]) > 1:
            settings = json.dumps([[k, v] for k, v in t["params"].items()], sort_keys=True, default=str)
            t["name"] += "-" + hashlib.sha256(settings.encode()).hexdigest()[:8]
    return out


def run_task(task: dict[str, Any], folder: str, threads: int = 0, trust: bool = False) -> dict[str, Any]:
    """Run (or skip, or resume) one configuration; never raises: failures come back as rows.

    ``threads`` > 0 sets the run's BLAS threads unless the sweep sets ``threads`` itself; ``trust``
    lets the resume of an unfinished run import a feature map that its file names by import path.
    """
    from mfld.config import load_config
    from mfld.storage import CheckpointReader

    from .build import resume, start

    path = Path(folder) / f"{task['name']}.h5"
    row = {"name": task["name"], **task["params"], "path": str(path)}
    try:
        own = any(o.startswith("threads=") for o in task["overrides"])
        share = [f"threads={threads}"] if threads and not own else []
        config = load_config(task["base"], share + task["overrides"] + ['output.progress="off"', "output.plot=false"])
        target = config["time"]["steps"]
        stale = path.exists() and _defining(CheckpointReader(path).config) != _defining(config)
        # The sweep file itself named the feature map; its own unfinished file naming the same may import it.
        trust = trust or ":" in config["model"]["feature"]
        if stale:  # the sweep's settings changed since this file was written: its results are not this task's
            start(config, path, overwrite=True)
            row["status"] = "rerun (settings changed)"
        elif path.exists():
            reader = CheckpointReader(path)
            done = int(reader.steps[-1]) if reader.steps.size else 0
            if done >= target:
                row["status"] = "skipped (done)"
            else:
                resume(path, target - done, trust=trust)
                row["status"] = "resumed"
        else:
            start(config, path)
            row["status"] = "done"
        obs = CheckpointReader(path).observables()
        row.update({k: float(obs[k]["value"][-1]) for k in SUMMARY if k in obs})
    except Exception as e:  # a failed run is reported, the sweep goes on
        row["status"] = "failed"
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def _defining(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a configuration that defines a run's results (not its length, output, threads or memory budget,
    which a file stores as the budget chosen when it started)."""
    out = {k: v for k, v in config.items() if k not in ("output", "time", "threads")}
    out["particles"] = {k: v for k, v in config["particles"].items() if k != "memory_budget_mb"}
    out["eta"] = config["time"]["eta"]
    out["data"] = {k: v for k, v in config["data"].items() if k not in ("d", "n", "n_test")} | (
        {} if config["data"]["source"] else {k: config["data"][k] for k in ("d", "n", "n_test")}
    )
    return out


def run_sweep(
    path: str | Path,
    out: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    trust: bool = False,
) -> list[dict[str, Any]]:
    """Run every task of the sweep file on Dask and write ``summary.csv`` and ``summary.md``.

    ``trust`` (``--trust-plugins``) lets resumed runs import feature maps their files name by import path.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers must be a positive number of worker processes, got {workers!r}")
    if scheduler and workers is not None:
        raise ValueError("--workers sizes the local cluster; with --scheduler the cluster has its own workers")
    from dask.distributed import as_completed

    base, shared, grid, out_spec = read_sweep(path)
    # The file's own "out" is relative to the sweep file, like its "base"; --out is relative to the caller.
    folder = Path(out) if out else Path(path).parent / out_spec if out_spec else Path(path).with_suffix("")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    todo = tasks(base, shared, grid)
    with dask_client(scheduler, workers or 2) as client:
        # Each local worker takes its share of the cores for its BLAS pools (no oversubscription).
        threads = 0 if scheduler else max(1, (os.cpu_count() or 1) // (workers or 2))
        futures = client.map(run_task, todo, folder=str(folder), threads=threads, trust=trust, pure=False)
        order = {f.key: k for k, f in enumerate(futures)}
        rows: list[dict[str, object]] = [{} for _ in futures]
        for done, future in enumerate(as_completed(futures), 1):
            row = future.result()
            rows[order[future.key]] = row
            log.info(f"[{done}/{len(futures)}] {row['status']:<15} {row['name']}")
    write_summary(rows, folder)
    return rows


def write_summary(rows: list[dict[str, Any]], folder: Path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    shown = [c for c in columns if c != "path"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        cells = [f"{r[c]:.6g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
