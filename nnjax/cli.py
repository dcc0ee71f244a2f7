"""The ``nnjax`` command line: list, run, reproduce, eval, predict, bench.

Every sub-command has ``--help``; ``nnjax run NAME --help`` lists that experiment's
options, which are the fields of its config dataclass. Bad input ends with one sentence
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from nnjax import compile_cache
from nnjax.errors import NnjaxError

PROG = "nnjax"


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One option per config field, typed from its annotation, defaulting to None (= keep)."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group("experiment options (defaults are the full, thesis settings)")
    for field in dataclasses.fields(config_cls):
        kind = hints.get(field.name, str)
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "") if field.metadata else ""
        help_text = f"{help_text} (default: {default})".strip()
        if kind is bool:
            group.add_argument(_option_name(field.name), dest=field.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
            continue
        origin = typing.get_origin(kind)
        if origin is typing.Literal:
            choices = typing.get_args(kind)
            group.add_argument(_option_name(field.name), dest=field.name, default=None,
                               choices=choices, type=type(choices[0]), help=help_text)
            continue
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = args[0] if args else str
        if kind not in (int, float, str):
            kind = str
        group.add_argument(_option_name(field.name), dest=field.name, default=None, type=kind,
                           metavar=kind.__name__.upper(), help=help_text)


MAX_SEED = 2**31 - 1


def seed_value(text: str) -> int:
    """``--seed``: an integer in [0, 2**31 - 1] (what every PRNG key and NumPy generator accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"--seed must be between 0 and {MAX_SEED}, got {value}")
    return value


def _seconds_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _folder_options(parser: argparse.ArgumentParser) -> None:
    """``--resume`` / ``--overwrite``: what to do with an earlier run in the output folder."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="mode", action="store_const", const="resume",
                       help="continue the unfinished run in the output folder (an error when there is none); "
                            "without this flag the same run is continued and a different one refused")
    group.add_argument("--overwrite", dest="mode", action="store_const", const="overwrite",
                       help="delete the earlier run in the output folder and start afresh")
    parser.set_defaults(mode="auto")
    parser.add_argument("--checkpoint-seconds", type=_seconds_value, default=10.0, metavar="S",
                        help="epoch-end checkpoints at least S seconds apart; 0: every epoch (default: 10)")


def _compile_cache_options(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--compile-cache", metavar="DIR", default=None,
                       help="persistent XLA compilation cache folder (default: NNJAX_COMPILATION_CACHE, else "
                            "~/.cache/nnjax/xla/<jaxlib>-<cpu>)")
    cache.add_argument("--no-compile-cache", action="store_true",
                       help="compile afresh, without the persistent cache (or NNJAX_COMPILATION_CACHE=off)")


def _common_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=seed_value, default=0, help="seed for every PRNG key (default: 0)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/EXPERIMENT)")
    _folder_options(parser)
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="the quick profile: small, minutes or less")
    profile.add_argument("--full", action="store_true", help="the thesis's settings (the default)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-figures", action="store_true",
                        help="draw no figures (same results and checkpoints, seconds sooner; "
                             "a finished run is not redrawn: --overwrite)")
    _compile_cache_options(parser)
    dist = parser.add_argument_group("multi-process training (JAX distributed runtime)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (or NNJAX_COORDINATOR)")
    dist.add_argument("--num-processes", type=int, help="number of processes (or NNJAX_NUM_PROCESSES)")
    dist.add_argument("--process-id", type=int, help="this process's id, from 0 (or NNJAX_PROCESS_ID)")


def _cmd_list(args: argparse.Namespace) -> int:
    from nnjax.experiment import all_experiments

    for exp in all_experiments():
        reason = exp.requires() if exp.requires else None
        note = f"  [unavailable: {reason}]" if reason else ""
        print(f"{exp.name:<16} {exp.description}{note}")
    return 0


def _cmd_run(argv: Sequence[str]) -> int:
    from nnjax.experiment import all_experiments, get, run_experiment

    head = argparse.ArgumentParser(
        prog=f"{PROG} run", add_help=False,
        description="Run one experiment; `nnjax run NAME --help` lists its options.",
    )
    head.add_argument("experiment", nargs="?")
    known, rest = head.parse_known_args(argv)
    if known.experiment is None or known.experiment.startswith("-"):
        names = ", ".join(e.name for e in all_experiments())
        print(f"usage: {PROG} run EXPERIMENT [--seed N] [--out DIR] [--quick|--full] [options]\n\n"
              f"Run one experiment. Experiments: {names}.\n"
              f"`{PROG} run EXPERIMENT --help` lists an experiment's options.")
        return 0 if known.experiment is None or known.experiment in ("-h", "--help") else 2
    exp = get(known.experiment)
    parser = argparse.ArgumentParser(prog=f"{PROG} run {exp.name}", description=exp.description)
    _common_run_options(parser)
    _add_config_options(parser, exp.config)
    args = parser.parse_args(rest)
    from nnjax.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    compile_cache.enable(args.compile_cache, disabled=args.no_compile_cache)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(exp.config)}
    config = exp.make_config("quick" if args.quick else "full", **overrides)
    reason = exp.requires() if exp.requires else None
    if reason:
        raise NnjaxError(reason)
    out = args.out or f"runs/{exp.name}"
    summary = run_experiment(exp, config, out, seed=args.seed, progress=not args.no_progress, mode=args.mode,
                             checkpoint_seconds=args.checkpoint_seconds, make_figures=not args.no_figures)
    print(json.dumps(summary, indent=2))
    print(f"wrote {Path(out) / 'summary.json'}")
    return 0


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


def _classifier_folder(target: str, checkpoint: str | None) -> Path | None:
    """``target`` as an exported classifier folder (``nnjax predict DIR ...``), or None for an experiment name."""
    if checkpoint is None and Path(target).is_dir():
        return Path(target)
    return None


def _cmd_eval(args: argparse.Namespace) -> int:
    from nnjax.experiment import get

    compile_cache.enable()
    folder = _classifier_folder(args.experiment, args.checkpoint)
    if folder is not None:
        from nnjax.transfer import load_classifier

        if not args.data:
            raise NnjaxError(f"Give the labelled data to evaluate on: `nnjax eval {folder} --data PATH`.")
        result = load_classifier(folder).evaluate(args.data, args.text_column, args.label_column)
        _print_results([result], args.json)
        return 0
    exp = get(args.experiment)
    if args.checkpoint is None:
        raise NnjaxError(f"Pass the folder a run saved: `nnjax eval {exp.name} --checkpoint DIR`.")
    if exp.evaluate is None:
        raise NnjaxError(f"Experiment {exp.name!r} has no evaluation; use `nnjax run {exp.name}` instead.")
    result = exp.evaluate(Path(args.checkpoint))
    _print_results([result], args.json)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from nnjax.experiment import get

    compile_cache.enable()
    inputs = list(args.inputs) + ([args.csv] if args.csv else [])
    folder = _classifier_folder(args.experiment, args.checkpoint)
    if folder is not None:
        from nnjax.transfer import load_classifier

        if not inputs:
            raise NnjaxError(f"Give at least one input to predict, e.g. `nnjax predict {folder} INPUT`.")
        results = load_classifier(folder).predict(inputs)
    else:
        exp = get(args.experiment)
        if exp.predict is None:
            raise NnjaxError(f"Experiment {exp.name!r} has no predict command.")
        if args.checkpoint is None:
            raise NnjaxError(f"Pass the folder a run saved: `nnjax predict {exp.name} --checkpoint DIR INPUT`.")
        if not inputs:
            raise NnjaxError(f"Give at least one input to predict, e.g. `nnjax predict {exp.name} --checkpoint DIR "
                             "INPUT`.")
        results = exp.predict(Path(args.checkpoint), inputs)
    _print_results(results, args.json)
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"{PROG}: {len(failed)} of {len(results)} inputs could not be read (their rows say why).",
              file=sys.stderr)
        return 1
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from nnjax.reproduce import reproduce

    compile_cache.enable(args.compile_cache, disabled=args.no_compile_cache)
    report = reproduce(
        profile="full" if args.full else "quick",
        out=Path(args.out),
        only=args.only,
        seed=args.seed,
        progress=not args.no_progress,
        mode=args.mode,
        checkpoint_seconds=args.checkpoint_seconds,
    )
    print(f"wrote {report}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from nnjax.bench import REPO, run_benchmarks

    out = Path(args.out)
    readme = REPO / "README.md" if out.absolute() == (REPO / "benchmarks" / "results") else None
    table = run_benchmarks(only=args.only, out=out, quick=args.quick, run=not args.merge_only, readme=readme)
    print(f"wrote {table}")
    return 0


PREDICT_HELP = ("Predict with a saved model: `nnjax predict CLASSIFIER_DIR INPUT...` (an exported classifier) or "
                "`nnjax predict EXPERIMENT --checkpoint DIR INPUT...`; images, texts or a CSV series (inputs and "
                "options in any order).")


def _add_predict_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("experiment", help="an exported classifier folder, or an experiment name")
    p.add_argument("inputs", nargs="*", help="image paths or texts")
    p.add_argument("--checkpoint", default=None, help="the 'checkpoint' folder a run wrote (with an experiment name)")
    p.add_argument("--csv", help="a CSV file (FILE or FILE:COLUMN) for series experiments")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_predict)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="nnjax: the thesis's networks in JAX/Flax, measured.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the experiments", description="List the registered experiments.")
    p.set_defaults(func=_cmd_list)

    sub.add_parser("run", help="run one experiment (`nnjax run NAME --help` for its options)", add_help=False)

    p = sub.add_parser("reproduce", help="run every experiment and write a report",
                       description="Run every experiment (quick profile by default) and write report.md/.html.")
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="the quick profile (the default)")
    profile.add_argument("--full", action="store_true", help="the thesis's full settings")
    p.add_argument("--out", default="runs/reproduce", help="report folder (default: runs/reproduce)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    p.add_argument("--seed", type=seed_value, default=0, help="seed for every experiment (default: 0)")
    _folder_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _compile_cache_options(p)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("eval", help="evaluate a saved checkpoint",
                       description="Evaluate a saved model: `nnjax eval CLASSIFIER_DIR --data PATH` (an exported "
                                   "classifier on labelled data) or `nnjax eval EXPERIMENT --checkpoint DIR`.")
    p.add_argument("experiment", help="an exported classifier folder, or an experiment name")
    p.add_argument("--checkpoint", default=None, help="the 'checkpoint' folder a run wrote (with an experiment name)")
    p.add_argument("--data", default=None, help="classifier folders: a folder of class folders, or a CSV/TSV/JSONL")
    p.add_argument("--text-column", default="text", help="text classifiers: the column of the texts")
    p.add_argument("--label-column", default="label", help="text classifiers: the column of the labels")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)

    _add_predict_arguments(sub.add_parser("predict", help="predict with a saved checkpoint", description=PREDICT_HELP))

    p = sub.add_parser("bench", help="run the benchmarks and write one table",
                       description="Run every benchmark in benchmarks/ and write one Markdown + JSON table.")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (e.g. mlp mnist)")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for the tables; the default (the repository's benchmarks/results) also updates "
                        "the README's headline table")
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    p.add_argument("--merge-only", action="store_true", help="only merge the tables already in --out")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nnjax import interrupts

    argv = list(sys.argv[1:] if argv is None else argv)
    interrupts.install()  # SIGTERM ends a run like Ctrl-C: one line, checkpoints kept
    try:
        if argv and argv[0] == "run":
            return _cmd_run(argv[1:])
        if argv and argv[0] == "predict":
            # Texts and image paths may come before or after the options: intermixed parsing,
            # which argparse does not offer through sub-parsers.
            parser = _add_predict_arguments(argparse.ArgumentParser(prog=f"{PROG} predict", description=PREDICT_HELP))
            return _cmd_predict(parser.parse_intermixed_args(argv[1:]))
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return args.func(args)
    except NnjaxError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        interrupts.ignore_from_now()
        signal_name = str(err) or "SIGINT"
        print(f"{PROG}: interrupted ({signal_name}); completed checkpoints are kept — rerun the same command to "
              "resume.", file=sys.stderr)
        return 143 if signal_name == "SIGTERM" else 130


if __name__ == "__main__":
    sys.exit(main())
