"""Entry point: parse the subcommand, run it, and turn user errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Iterator, List, NoReturn, Optional

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that points to --help, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one sub-parser per command module (which import torch, numpy and tqdm)."""
    from .commands import COMMAND_MODULES

    parser = OneLineErrorParser(prog="cowgan", description="3D StyleGAN2 for Circle of Willis TOF-MRA.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _printable_console() -> None:
    """Print what a strict UTF-8 console refuses (a path argument or file name that is not UTF-8, which Python holds
    as lone surrogates) as escapes, instead of failing with a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Optional[List[str]] = None) -> int:
    """Run `cowgan ARGS`; return the process exit code."""
    _printable_console()
    try:  # the library says how to install PyTorch; the commands' modules need torch, numpy and tqdm
        from CircleOfWillisGANLib.errors import CoWGANError

        parser = build_parser()
    except ImportError as exc:
        print(f"cowgan: error: {environment_error_message(exc) or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = _home_expanded(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        with _sigterm_as_interrupt():
            return int(args.run(args) or 0)
    except CoWGANError as exc:
        if args.debug:
            raise
        print(f"cowgan: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cowgan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModuleNotFoundError, OSError, MemoryError, RuntimeError) as exc:
        message = environment_error_message(exc)
        if message is None or args.debug:
            raise
        print(f"cowgan: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


def _home_expanded(args: argparse.Namespace) -> argparse.Namespace:
    """Arguments with a leading ~ expanded, as a shell does but not in `--out=~/x` or a quoted path: the file and
    folder checks, torch and safetensors would take it for a folder named ~ in the current one."""
    def expand(value: Any) -> Any:
        if isinstance(value, str) and (value == "~" or value.startswith("~/")):  # not ~name: ids and names may start so
            return os.path.expanduser(value)
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    for name, value in vars(args).items():
        setattr(args, name, expand(value))
    return args


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (timeout, Slurm, docker stop) stops a command as Ctrl-C does, so it cleans up its partial files;
    `train` installs its own handler, which saves the run first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


OUT_OF_MEMORY_WORDS = ("not enough memory", "out of memory", "can't allocate memory", "failed to allocate memory",
                       "bad_alloc")  # CUDA, PyTorch's CPU allocator, SimpleITK, C++


def environment_error_message(exc: BaseException) -> Optional[str]:
    """One line naming the problem and the fix for failures of the machine rather than of the code (a missing
    package, an unwritable or full disk, too little memory); None for anything else, which stays a traceback."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        try:
            from CircleOfWillisGANLib.errors import pip_name_of
        except ImportError:  # the library itself cannot load (no torch): name the module as it is
            package = exc.name.split(".")[0]
        else:
            package = pip_name_of(exc.name)
        return (f"this command needs the Python package '{package}', which is not installed: run `pip install {package}` "
                "(or install the extra it belongs to, e.g. `pip install -e \".[training,evaluation]\"`)")
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror}: choose a folder that exists, is writable and has free space"
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or any(words in text for words in OUT_OF_MEMORY_WORDS):
        return ("out of memory: ask for less at once (fewer volumes or samples, a smaller batch or grid), or close "
                "other programs")
    return None
