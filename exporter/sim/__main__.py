"""Command line of the simulated Meta: `python -m exporter.sim SUBCOMMAND ...`.

node --spec FILE   run the servers a sim node spec lists (see exporter.sim.nodespec); prints
                   one JSON line {"ready": true, "control_socket": ...} once all listen,
                   stops cleanly on SIGTERM/SIGINT. Exit 0 after a clean stop, 1 when a
                   listener cannot bind, 2 for a bad spec or usage.
feeds --listen HOST:PORT --control SOCKET
                   a fake Meta status page and RIS Live stream (see exporter.sim.feeds),
                   steered through a control API on the UNIX socket; same ready line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.sim.node import run_node
from exporter.sim.nodespec import NodeSpec, SpecError

EXIT_USAGE = 2


def _node(args: argparse.Namespace) -> int:
    try:
        spec = NodeSpec.load(args.spec)
    except SpecError as exc:
        print(f"sim node: bad spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_node(spec))


def _add_node(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("node", help="run the simulated servers of one spec")
    parser.add_argument("--spec", required=True, help="the node spec (JSON)")
    parser.set_defaults(run=_node)


def _feeds(args: argparse.Namespace) -> int:
    from exporter.sim.feeds import run_feeds

    return asyncio.run(run_feeds(args.listen, Path(args.control)))


def _add_feeds(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("feeds", help="run a fake status page and RIS Live stream")
    parser.add_argument("--listen", required=True, help="HOST:PORT for the feeds")
    parser.add_argument("--control", required=True, help="UNIX socket for the control API")
    parser.set_defaults(run=_feeds)


# Another subcommand is one more `_add_*` function here.
SUBCOMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    _add_node,
    _add_feeds,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m exporter.sim", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
