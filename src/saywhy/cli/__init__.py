"""The ``saywhy`` command: parse arguments, call the library, print. Nothing else lives here.

One module per sub-command, each with ``register(subparsers)`` and ``run(args)``;
:mod:`saywhy.cli.common` holds what they share. Exit status: 0 done, 1 a runtime error
(one line ``saywhy: error: ...`` on stderr, no traceback), 2 a usage error (argparse:
every option is checked when parsed, before anything heavy is imported), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from saywhy import __version__
from saywhy.cli.common import global_options, network_options
from saywhy.errors import SaywhyError

COMMANDS = ("demo", "data", "train", "extract", "fit", "explain", "contrast", "describe", "ground", "search", "debug",
            "evaluate", "gallery", "report", "serve", "layers", "checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saywhy", description="Say in words why an image classifier decided what it did.",
                                     parents=[global_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"saywhy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"saywhy.cli.{name}")
        before = set(sub.choices)
        module.register(sub)
        for added in set(sub.choices) - before:
            sub.choices[added].set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``saywhy`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        status = _main(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (saywhy describe --list | head -1): stop quietly
        _silence_stdout()
        return 141


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) or a usage error (2), already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    logging.basicConfig(level=logging.WARNING, format="saywhy: %(message)s")
    try:
        with network_options(args):  # --device checked, --amp in force, for the commands that run the network
            args.run(args)
    except BrokenPipeError:
        raise
    except SaywhyError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print("saywhy: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # permission denied, disk full, a path that is a file: say which, no traceback
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}: check the path and its permissions")
    except Exception as error:
        if _is_decompression_bomb(error):
            return _fail(f"an image is too large to open safely ({error}): shrink it or leave it out")
        if getattr(args, "debug", False):
            raise
        # a bug of saywhy's, not the user's: one line, and the way to the traceback
        return _fail(f"internal error, {error.__class__.__name__}: {error} (run again with --debug for the "
                     "traceback, and please report it)")
    return 0


def _fail(message: str) -> int:
    print(f"saywhy: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Point stdout at devnull so Python's flush at exit does not raise again (Python docs, 'Note on SIGPIPE')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured in tests)
        pass


def _is_decompression_bomb(error: BaseException) -> bool:
    image = sys.modules.get("PIL.Image")
    return image is not None and isinstance(error, image.DecompressionBombError)
