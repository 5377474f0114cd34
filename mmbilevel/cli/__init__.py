"""Command line interface: ``mmbilevel COMMAND [OPTIONS]``.

Each subcommand lives in its own module of this package, which defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``mmbilevel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# subcommand name -> (module under mmbilevel.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "solve a small lower-level MM problem and print its diagnostics"),
    "verify-table1": ("verify", "check the Legendre functions of Table 1 symbolically"),
    "train": ("train", "train a Standard, Euclidean or Bregman network on a data set"),
    "reproduce": ("reproduce", "reproduce the figures and tables of \"Bilevel Learning of Deep Representations\""),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser.

    Only the module of ``command`` is imported and given its options; the
    other subcommands appear in ``--help`` with their one-line description.
    With ``command=None`` every subcommand module is imported.
    """
    parser = argparse.ArgumentParser(
        prog="mmbilevel",
        description="Bilevel learning of deep representations by majorization-minimization.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            module = importlib.import_module(f"mmbilevel.cli.{module_name}")
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg in SUBCOMMANDS:
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_command(argv) or "")
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
