"""The ``mlxport`` command: a dispatcher that imports each subcommand only when it runs.

Each subcommand module (``mlxport.cli.<name>``) has ``configure_parser()`` and
``main(argv)``; this module turns every known exception into a short message
plus its hint, with the full traceback only when ``MLXPORT_DEBUG=1``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from typing import Sequence

# name -> one-line summary (kept here so `mlxport --help` imports no subcommand)
COMMANDS: dict[str, str] = {
    "export": "capture an MLX model or function and write any format mlxport knows (validated against MLX)",
    "validate": "re-run an exported artifact (any format) against the MLX callable it came from",
    "inspect": "show an artifact's inputs, outputs, opsets, node counts, size and metadata",
    "ops": "print the table of supported MLX primitives (generated from the registry)",
    "demo": "train a small MLP on scikit-learn's digits, export, validate and time it",
    "bench": "time exported artifacts side by side: latency, throughput, size and peak memory",
    "export-lm": "export an mlx-lm model folder with its KV cache for ONNX Runtime GenAI (validated by greedy tokens)",
    "generate": "generate text from an exported LM folder (ONNX Runtime GenAI or mlxport's ONNX Runtime loop)",
    "serve": "serve models over HTTP: SageMaker and Open Inference Protocol v2, batching, versions, metrics",
    "registry": "model versions and aliases (push, list, promote, rollback, show): local repository or MLflow",
    "package": "bundle an artifact for SageMaker, a Triton repository, KServe or edge devices",
}

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input (exit code 2): a malformed spec, conflicting or missing flags."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: mlxport <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, summary in COMMANDS.items()]
    from ..formats import suffix_list

    lines += ["", f"formats (chosen by the file suffix): {suffix_list('and')}",
              "", "Run `mlxport <command> --help` for a command's options.",
              "Set MLXPORT_DEBUG=1 to see full tracebacks."]
    return "\n".join(lines)


def format_known_exception(exc: BaseException) -> tuple[str, int]:
    """The message to print for an exception and the exit code (2 for usage errors, 1 otherwise)."""
    from ..errors import MlxportError

    if isinstance(exc, UsageError):
        text, code = f"error: {exc}", EXIT_USAGE
    elif isinstance(exc, MlxportError):
        text, code = f"error: {exc.message}", EXIT_FAILURE  # its str() ends with the hint, printed below
    elif isinstance(exc, (OSError, ValueError, TypeError, RuntimeError, ImportError)):
        text, code = f"error: {type(exc).__name__}: {exc}", EXIT_FAILURE
    else:
        text, code = f"error: unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE
    hint = getattr(exc, "hint", "")
    if hint:
        text += f"\nhint: {hint}"
    if not isinstance(exc, (UsageError, MlxportError)):
        text += "\n(set MLXPORT_DEBUG=1 for the full traceback)"
    return text, code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlxport`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else EXIT_USAGE
    if args[0] in ("-V", "--version"):
        from .. import __version__

        print(f"mlxport {__version__}")
        return 0
    command = args[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        suggestion = f"; did you mean `mlxport {close[0]}`?" if close else ""
        print(f"error: unknown command '{command}'{suggestion}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    try:
        module = importlib.import_module(f"{__name__}.{command.replace('-', '_')}")
        return int(module.main(args[1:]) or 0)
    except SystemExit as exc:  # argparse: --help (0) and its own usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILURE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mlxport inspect x | head`: the reader left; nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:  # the one place every error is turned into a message
        if os.environ.get("MLXPORT_DEBUG") == "1":
            traceback.print_exc()
        text, code = format_known_exception(exc)
        print(text, file=sys.stderr)
        return code


__all__ = ["COMMANDS", "UsageError", "format_known_exception", "main"]
