"""The ``mfld`` command line (``python -m mfld`` too): run, stationary, validate, experiment, sweep, resume, export,
configs, info, compare, plot; ``mfld COMMAND --help`` says what each takes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfld.config import ConfigError, load_config
from mfld.config.outputs import OUTPUTS, export, target_path
from mfld.discretizations.loop import Interrupted
from mfld.model.backend import BACKENDS
from mfld.storage import CheckpointError, CheckpointReader, commit
from mfld.storage.provenance import mfld_version

from . import build


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set or [])
    path = build.start(config, args.out, overwrite=args.overwrite)
    _finish(path, config["output"]["plot"], config["output"]["formats"])
    return 0


def _cmd_stationary(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set or [])
    if config["discretization"] == "particles":
        config["discretization"] = "grid"
    logging.getLogger("mfld").info("solving mu* = p_{mu*} on the grid:")
    path = build.write_stationary(config, args.out, overwrite=args.overwrite)
    print(f"mu*: {path}")
    if config["output"]["plot"]:
        from .plotting import plot_run

        print(f"plot: {plot_run(path)}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mfld.validation.suite import CHECKS, EXPERIMENTS, run_checks

    registry = EXPERIMENTS if args.command == "experiment" else CHECKS
    experiment = args.command == "experiment"
    overrides = _experiment_settings(args.set or []) if experiment else None
    reports = run_checks(
        args.checks,
        args.out,
        full=args.full,
        seed=args.seed,
        registry=registry,
        backend=getattr(args, "backend", "numpy"),
        jobs=args.jobs,
        fresh=args.fresh,
        overrides=overrides,
        scheduler=args.scheduler,
    )
    print(f"report: {args.out}/summary.md")
    failed = [r.name for r in reports if r.status == "failed"]
    if failed:
        print(f"mfld: the numbers disagree with the theory in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _experiment_settings(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs, each VALUE a TOML value (``seeds=2``, ``sigmas=[0, 1]``, ``init_sd="prior"``)."""
    import tomllib

    settings: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. seeds=2")
        try:
            settings[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            settings[key.strip()] = value  # a bare word: a string
    return settings


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    rows = run_sweep(args.file, args.out, args.scheduler, args.workers, trust=args.trust_plugins)
    failed = [r for r in rows if r["status"] == "failed"]
    # Each run's line was logged as it finished; here the tally, and the failures again with their errors.
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(", ".join(f"{n} {status}" for status, n in counts.items()) if rows else "no runs")
    for r in failed:
        print(f"  failed          {r['name']}   {r['error']}")
    if rows:
        print(f"summary: {rows[0]['path'].rsplit('/', 1)[0]}/summary.md")
    return 1 if failed else 0


def _cmd_resume(args: argparse.Namespace) -> int:
    path = build.resume(args.file, args.steps, trust=args.trust_plugins)
    output = CheckpointReader(path).config["output"]
    _finish(path, output["plot"], output["formats"])
    return 0


def _finish(path: Path, plot: bool, formats: Sequence[str]) -> None:
    print(f"checkpoint: {path}")
    for name in formats:  # written by the run (output.formats)
        print(f"{name + ':':<11} {target_path(path, name)}")
    if plot:
        from .plotting import plot_measure, plot_run

        print(f"plot:       {plot_run(path)}")
        print(f"measure:    {plot_measure(path)}")
    _print_last(CheckpointReader(path))


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format not in OUTPUTS:
        raise ValueError(f"--format {args.format!r} is no output format; the formats are {', '.join(OUTPUTS)}")
    print(export(args.file, args.format, args.out))
    return 0


def _print_last(reader: CheckpointReader) -> None:
    obs = reader.observables()
    if not obs:
        return
    step = int(next(iter(obs.values()))["step"][-1])
    print(f"observables at step {step}:")
    for name, el in obs.items():
        print(f"  {name:<20} {el['value'][-1]: .8g}")


def _cmd_configs(args: argparse.Namespace) -> int:
    from mfld.config import shipped_configs

    print("shipped configurations (`mfld run NAME`, `mfld stationary NAME`):")
    for name, summary in shipped_configs().items():
        print(f"  {name:<14} {summary}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    r = CheckpointReader(args.file)
    c = r.config
    print(f"file:            {r.path}")
    print(f"discretisation:  {r.kind}  ({c['model']['objective']} objective, feature {c['model']['feature']})")
    print(
        f"hyper-params:    lam={c['model']['lam']:g} lam_a={c['model']['lam_a']:g} lam_w={c['model']['lam_w']:g} "
        f"eta={c['time']['eta']:g}"
    )
    X, Y = r.data["X"], r.data["Y"]
    source = f"source={c['data']['source']}" if c["data"]["source"] else f"target={c['data']['target']}"
    print(f"data:            n={X.shape[0]} samples, d={X.shape[1]} inputs, T={Y.shape[1]} target(s) {source}")
    if r.kind == "particles":
        pc = c["particles"]
        print(f"particles:       N={pc['N']} ({pc['scheme']}, dual solve {pc['solve']})")
    if r.steps.size:
        room = f"; rows for {r.capacity}" if r.capacity > r.steps.size else ""
        print(
            f"frames:          {r.steps.size} (steps {int(r.steps[0])} .. {int(r.steps[-1])}, t = {r.times[-1]:g}"
            f"{room})"
        )
    else:
        print("frames:          none")
    if r.has_density:
        g = r.grid()
        print(f"grid:            {' x '.join(map(str, g.cells))} cells on {list(zip(g.lower, g.upper, strict=True))}")
    print(f"configured:      {c['time']['steps']} steps")
    if r.provenance:
        p = r.provenance
        made = f"mfld {p.get('mfld', '?')}" + (f" (git {p['git_revision']})" if p.get("git_revision") else "")
        libs = ", ".join(f"{lib} {p[lib]}" for lib in ("numpy", "scipy", "h5py") if lib in p)
        print(f"made by:         {made}, Python {p.get('python', '?')}, {libs}")
        print(f"                 on {p.get('host', '?')} at {p.get('started', '?')}: {p.get('command', '')}")
    _print_last(r)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, plot, table

    out = args.out or f"{Path(args.a).with_suffix('')}-vs-{Path(args.b).stem}.png"
    _check_folder(Path(out))  # before the distances are computed, which can take minutes
    rows = compare(args.a, args.b, args.steps, trust=args.trust_plugins)
    print(f"A = {args.a}, B = {args.b}")
    print(table(rows), end="")
    print(f"plot: {plot(rows, out, f'{Path(args.a).name} against {Path(args.b).name}')}")
    return 0


def _check_folder(out: Path) -> None:
    """Refuse an output whose folder is missing or cannot be written, naming it."""
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"the folder of {str(out)!r} does not exist; create it or choose another --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"the folder of {str(out)!r} cannot be written; choose another --out")


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plotting import animate, plot_measure, plot_run

    _check_folder(Path(args.out) if args.out else Path(args.file))
    # With --out every picture goes beside it, named after it: nothing is written next to FILE (a read-only folder).
    base = Path(args.out) if args.out else Path(args.file)
    print(plot_run(args.file, args.out))
    print(plot_measure(args.file, base.with_name(base.stem + "-measure.png"), steps=args.steps))
    if args.animate:
        print(animate(args.file, base.with_suffix(".gif")))
    return 0


def _config_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument(
        "config",
        nargs="?",
        help="TOML configuration file, or a shipped one by name (`mfld configs`), merged over the built-in default",
    )
    p.add_argument("--out", help=out_help)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key, e.g. time.eta=0.1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")


def _report_arguments(p: argparse.ArgumentParser, names_help: str, full_help: str, out: str) -> None:
    p.add_argument("checks", nargs="+", metavar="name", help=names_help)
    p.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", default=out, help=f"report folder (default: {out})")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_validate)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfld", description="Mean-field Langevin dynamics of two-layer networks.")
    p.add_argument("--version", action="version", version=f"mfld {mfld_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: debugging)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a configuration (the built-in default without CONFIG)")
    _config_arguments(r, "checkpoint file (default: output.path)")
    r.set_defaults(func=_cmd_run)
    st = sub.add_parser("stationary", help="compute mu* on a grid as the fixed point of the proximal Gibbs map")
    _config_arguments(st, "output file (default: output.path)")
    st.set_defaults(func=_cmd_stationary)
    v = sub.add_parser("validate", help="check the theory numerically: convexity, rate, crosscheck, discretizations")
    _report_arguments(
        v,
        "check names, or 'all'",
        "paper-grade sizes instead of the quick ones (CPU: the checks are small grids and particle sets)",
        "mfld-validation",
    )
    e = sub.add_parser(
        "experiment",
        help="reproduce the paper: alignment, paper-figure-1, label-noise, paper-figure-2, sample-complexity",
    )
    _report_arguments(
        e,
        "experiment names, or 'all'",
        "the paper's sizes (long on a CPU: use --backend cupy on a GPU)",
        "mfld-experiments",
    )
    for parser in (v, e):
        parser.add_argument(
            "--jobs",
            type=int,
            default=0,
            metavar="N",
            help="Dask worker processes running the runs side by side (an experiment's, the "
            "crosscheck's parts), one BLAS pool of cores/N threads each (default 0: one per core; "
            "1: one after the other in this process)",
        )
        parser.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help="submit the runs to the Dask scheduler at ADDRESS (e.g. tcp://host:8786) instead of a local cluster",
        )
        parser.add_argument(
            "--fresh",
            action="store_true",
            help="run every run again instead of reading back the results an earlier invocation saved under OUT/jobs/",
        )
    e.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a key of the experiment's [quick] or [full] table, e.g. seeds=2 (TOML values)",
    )
    e.add_argument(
        "--backend",
        default="numpy",
        choices=list(BACKENDS),
        help="array backend of the particle training (label-noise's grid part runs on the CPU)",
    )
    sw = sub.add_parser("sweep", help="run a grid of configurations on Dask (a LocalCluster by default)")
    sw.add_argument("file", help="sweep TOML: base, out, [set] and [grid] of lists")
    sw.add_argument("--out", help="results folder (default: the file's 'out', else its name)")
    sw.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    sw.add_argument("--workers", type=int, help="worker processes of the LocalCluster (default 2)")
    sw.add_argument(
        "--trust-plugins",
        action="store_true",
        help="let resumed runs import a feature map their files name by module:attribute",
    )
    sw.set_defaults(func=_cmd_sweep)
    s = sub.add_parser("resume", help="continue a run from its last checkpoint, bit for bit")
    s.add_argument("file")
    s.add_argument("--steps", type=int, help="steps to add (default: up to the configured time.steps)")
    s.add_argument(
        "--trust-plugins",
        action="store_true",
        help="import a feature map that the file names by module:attribute (only for files you trust)",
    )
    s.set_defaults(func=_cmd_resume)
    ex = sub.add_parser("export", help="write a saved run in another format (`npz`, or a plug-in's)")
    ex.add_argument("file")
    ex.add_argument(
        "--format", required=True, help="an output format: " + ", ".join(OUTPUTS) + " (or an installed plug-in's)"
    )
    ex.add_argument("--out", help="the file to write (default: FILE with the format as its suffix)")
    ex.set_defaults(func=_cmd_export)
    c = sub.add_parser("configs", help="list the shipped configurations, usable by name")
    c.set_defaults(func=_cmd_configs)
    i = sub.add_parser("info", help="summarise a checkpoint file")
    i.add_argument("file")
    i.set_defaults(func=_cmd_info)
    cp = sub.add_parser(
        "compare", help="two saved runs of one problem at matching times: W1, W2, U, df, alignment, kernel distance"
    )
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("--steps", type=int, nargs="+", help="only these steps of A (default: every common time)")
    cp.add_argument("--out", help="PNG path (default: A-vs-B.png)")
    cp.add_argument("--trust-plugins", action="store_true", help="import feature maps the files name by path")
    cp.set_defaults(func=_cmd_compare)
    pl = sub.add_parser("plot", help="draw a checkpoint's observables to PNG")
    pl.add_argument("file")
    pl.add_argument(
        "--out",
        help="PNG path of the observables (default: FILE with .png); the measure goes beside it as OUT-measure.png "
        "(and the animation as OUT.gif)",
    )
    pl.add_argument("--steps", type=int, nargs="+", help="saved steps at which to draw the measure (default: four)")
    pl.add_argument("--animate", action="store_true", help="also every saved frame as FILE.gif")
    pl.set_defaults(func=_cmd_plot)
    return p


def _launcher_rank() -> int:
    """This process's rank as the MPI launcher set it (MPICH, Open MPI, PMIx), without initialising MPI."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _configure_logging(verbosity: int) -> None:
    """Status and progress go to stderr through the ``mfld`` logger; results go to stdout."""
    logger = logging.getLogger("mfld")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    np.seterr(over="ignore", under="ignore")
    rank = _launcher_rank()
    _configure_logging(-1 if args.quiet or rank > 0 else args.verbose)
    if rank > 0:  # one rank speaks for an MPI job; errors still reach stderr
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    try:
        return args.func(args)
    except Interrupted as e:
        hint = "" if e.detail else "; the final checkpoint is written, continue with `mfld resume`"
        print(f"mfld: {e}{hint}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mfld: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mfld info FILE | head`: the reader left, which is no error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0
    except (
        ConfigError,
        CheckpointError,
        FileExistsError,
        ValueError,
        FloatingPointError,
        ImportError,
        RuntimeError,
        MemoryError,
    ) as e:
        print(f"mfld: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written: its name and the reason, not a traceback
        name = f" {e.filename!r}" if e.filename else ""
        print(f"mfld: error: cannot use{name}: {e.strerror or e}", file=sys.stderr)
        return 2


def run_main() -> None:
    """The ``mfld`` command: :func:`main`'s status as the exit code. After HDF5 failed a write while releasing an
    object (a full disk at a commit), the message is out and the file as its last commit left it; the process
    ends at once, as closing that file again at interpreter exit can crash it."""
    code = main()
    if commit.RELEASE_FAILED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_main()
