"""`muxserve` command line. Each subcommand lives in its own module with
``add_parser(subparsers)`` that registers it and sets ``func`` (args -> exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules under muxserve.cli that define a subcommand; a missing one is skipped so that
# partial installs still give a useful CLI.
SUBCOMMANDS = ("generate", "plan", "simulate", "profile", "compare", "serve", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muxserve", description="Serve many LLMs on shared accelerators (MuxServe).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"muxserve.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"muxserve.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"muxserve {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
