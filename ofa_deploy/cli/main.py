"""Entry point: parse arguments, run one verb, turn failures into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from ofa_deploy import __version__
from ofa_deploy.cli import (
    benchmark,
    compile,
    completion,
    demo,
    deploy,
    devices,
    doctor,
    estimate,
    eval_subnets,
    extract,
    fit,
    info,
    predict,
    profile,
    search,
    train,
    train_predictor,
    validate,
)
from ofa_deploy.cli.output import printable
from ofa_deploy.errors import OFADeployError, did_you_mean

VERBS = (
    devices,
    doctor,
    info,
    profile,
    predict,
    validate,
    search,
    compile,
    benchmark,
    deploy,
    estimate,
    fit,
    train,
    eval_subnets,
    demo,
    extract,
    train_predictor,
    completion,
)


VERBOSE_HELP = "debug messages, and tracebacks on errors"
QUIET_HELP = "only warnings and errors on stderr"


class _Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped verb or choice ("did you mean 'profile'?")."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            message += did_you_mean(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``ofa-deploy`` parser: global flags and every verb's sub-parser (backend plugins are discovered here)."""
    parser = _Parser(
        prog="ofa-deploy",
        description="Profile, predict, search, compile and ship Once-for-All sub-networks for your devices.",
    )
    parser.add_argument("--version", action="version", version=f"ofa-deploy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        verb.add_parser(subparsers)
    for sub in subparsers.choices.values():  # the global flags work after the verb too (`info ... -v`)
        global_flags = sub.add_argument_group("global flags (also before the verb)")
        global_flags.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        global_flags.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    return parser


class _Formatter(logging.Formatter):
    """Progress as plain lines; warnings and worse prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        message = printable(super().format(record))  # messages quote device output: no control characters
        if record.levelno >= logging.WARNING and not message.startswith("warning:"):
            return f"{record.levelname.lower()}: {message}"
        return message


def configure_logging(verbose: bool, quiet: bool) -> None:
    """The CLI's own stderr handler for the ``ofa_deploy`` loggers (the library only logs)."""
    logger = logging.getLogger("ofa_deploy")
    for handler in list(logger.handlers):
        if getattr(handler, "_ofa_deploy_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._ofa_deploy_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-deploy`` on ``argv``; returns the exit code: 0, the error's own (2 bad input, 3 target unavailable,
    1 other), 130 on Ctrl-C. Every failure is one line on stderr (a traceback with ``-v``)."""
    # Logging first: building the parser discovers backend plugins, which may warn.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-v", "--verbose", action="store_true")
    early.add_argument("-q", "--quiet", action="store_true")
    known, _ = early.parse_known_args(argv)
    configure_logging(known.verbose, known.quiet)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and hasattr(args, "no_progress"):  # -q: warnings and errors only, no progress bars either
        args.no_progress = True
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except OFADeployError as exc:
        if args.verbose:
            traceback.print_exc()
        line = printable(str(exc))  # one line without control characters, whatever a name or a device held
        print(f"ofa-deploy {args.verb}: error: {line}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"ofa-deploy {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unforeseen: still one line unless -v
        if args.verbose:
            traceback.print_exc()
        detail = printable(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
        print(
            f"ofa-deploy {args.verb}: internal error: {type(exc).__name__}: {detail} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
