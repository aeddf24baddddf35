"""Command line: `run` (default), `check` (one-shot table), `validate` (config only).

Flags follow the Prometheus style (--config.file, --web.listen-address, --log.level, ...).
Exit codes: 0 ok; 1 (check) some Meta service down or degraded; 2 bad config, or (check)
this vantage is offline so nothing can be said about Meta.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from aiohttp import web

from . import __version__, config, logsetup
from .model import Status
from .runtime import Runtime
from .spec import Config

log = logging.getLogger("exporter")

DEFAULT_PORT = 10094
COMMANDS = ("run", "check", "validate", "demo")
EXIT_OK, EXIT_META_DOWN, EXIT_VANTAGE_OR_CONFIG = 0, 1, 2


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """(host or None for all interfaces, port) from :10094, 127.0.0.1:0 or [::1]:10094."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not host:port (e.g. :{DEFAULT_PORT} or 127.0.0.1:0)"
        )
    host = host.strip("[]")
    return (host or None), int(port)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config.file",
        dest="config_file",
        metavar="FILE",
        help="YAML config merged over the built-in Meta catalogue (default: the catalogue alone)",
    )
    common.add_argument(
        "--log.level", dest="log_level", choices=list(logsetup.LEVELS), default="info"
    )
    common.add_argument(
        "--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt"
    )
    common.add_argument(
        "--egress.allow-network",
        dest="allow",
        action="append",
        metavar="CIDR",
        help="only probe inside these networks (repeatable; replaces egress.allow_networks)",
    )
    common.add_argument(
        "--egress.deny-network",
        dest="deny",
        action="append",
        metavar="CIDR",
        help="never probe inside these networks (repeatable; replaces egress.deny_networks)",
    )
    common.add_argument(
        "--dns.resolver",
        dest="resolvers",
        action="append",
        metavar="IP[:PORT]",
        help="recursive resolver to use (repeatable; replaces dns.resolvers)",
    )
    parser = argparse.ArgumentParser(
        prog="meta-outage-exporter",
        description="Is Facebook, Instagram, WhatsApp, Messenger, Threads or a Meta API down - "
        "at which layer, since when - or is it us?",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser(
        "run", parents=[common], help="probe in the background and serve /metrics (default)"
    )
    run.add_argument(
        "--web.listen-address",
        dest="listen",
        type=parse_listen_address,
        default=(None, DEFAULT_PORT),
        metavar="HOST:PORT",
        help=f"address to serve on; port 0 picks a free one (default :{DEFAULT_PORT})",
    )
    check = commands.add_parser(
        "check", parents=[common], help="probe everything once and print a table"
    )
    check.add_argument(
        "--json", action="store_true", help="print the /api/v1/status document instead"
    )
    commands.add_parser("validate", parents=[common], help="validate the config and exit")
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run against a simulated Meta on loopback, replaying outages (no root or internet)",
    )
    demo.add_argument(
        "--web.listen-address",
        dest="listen",
        type=parse_listen_address,
        default=(None, DEFAULT_PORT),
        metavar="HOST:PORT",
    )
    demo.add_argument(
        "--demo.step",
        dest="step",
        type=float,
        default=7.0,
        metavar="SECONDS",
        help="seconds per replayed outage (default 7)",
    )
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """Raises config.ConfigError (also for bad flags, which override the file)."""
    loaded = config.load(args.config_file)
    try:
        return config.with_overrides(
            loaded, allow=args.allow, deny=args.deny, resolvers=args.resolvers
        )
    except ValueError as exc:
        raise config.ConfigError(
            [config.ConfigProblem(config.Position("<command line>", 1, 1), (), str(exc))]
        ) from None


# -- run -------------------------------------------------------------------------------


async def serve(
    listen: tuple[str | None, int],
    initial: Config,
    loader: Callable[[], Config],
    background: Awaitable[None] | None = None,
) -> int:
    """Probe and serve until SIGTERM/SIGINT; SIGHUP reloads through `loader`."""
    from .web import init_app  # imported here: `check` and `validate` need no web server

    runtime = Runtime(initial)
    app = init_app(runtime, loader)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    host, port = listen
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host or "", port, exc.strerror)
        await runner.cleanup()
        if background is not None:
            background.close()  # type: ignore[attr-defined]
        return EXIT_VANTAGE_OR_CONFIG
    for address in runner.addresses:
        shown = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        log.info("listening on http://%s:%s/ (bound address)", shown, address[1])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[object]] = set()

    def spawn(work: Awaitable[object]) -> None:
        task = loop.create_task(work)  # type: ignore[arg-type]
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(runtime.reload(loader)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if background is not None:
        spawn(background)
    await stop.wait()
    log.info("shutting down")
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    return EXIT_OK


# -- check -----------------------------------------------------------------------------


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def check_report(runtime: Runtime) -> tuple[str, int]:
    """The table and the exit code for `check`; pure over the runtime's state."""
    snap = runtime.snapshot()
    rows = [["SERVICE", "STATUS", "LAYER", "LATENCY", "REASON"]]
    exit_code = EXIT_OK
    unjudged = 0
    for service in snap.config.meta_services:
        state = snap.services[service.name]
        results = [snap.records[c.key].last for c in service.checks if snap.records[c.key].last]
        latency = max((r.duration for r in results if r.success), default=None)
        failing = sorted({r.reason.value for r in results if not r.success})
        rows.append(
            [
                service.display_name,
                state.status.value,
                state.layer.value if state.layer.value != "none" else "-",
                f"{latency * 1000:.0f} ms" if latency is not None else "-",
                ", ".join(failing) or "-",
            ]
        )
        if state.status is not Status.UP:
            exit_code = EXIT_META_DOWN
            unjudged += state.status is Status.UNKNOWN
    if not snap.vantage.up:
        exit_code = EXIT_VANTAGE_OR_CONFIG
        verdict = f"IT IS US: {snap.vantage.detail}."
    elif unjudged:
        verdict = f"Could not judge {unjudged} service(s): {snap.vantage.detail}."
    elif exit_code == EXIT_META_DOWN:
        verdict = "Meta has a problem; this vantage's network is fine."
    else:
        verdict = "All Meta services are up."
    return _table(rows) + "\n\n" + verdict + "\n", exit_code


async def check_once(args: argparse.Namespace, loaded: Config) -> int:
    runtime = Runtime(loaded)
    await runtime.check_once()
    report, code = check_report(runtime)
    if args.json:
        from .web import status_document

        print(json.dumps(status_document(runtime.snapshot()), indent=2))
    else:
        print(report, end="")
    return code


# -- entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    logsetup.configure(args.log_level, args.log_format)
    try:
        loaded = load_config(args)
    except config.ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_VANTAGE_OR_CONFIG
    if args.command == "validate":
        print(
            f"{loaded.source}: OK, {len(loaded.meta_services)} Meta services, "
            f"{len(loaded.checks)} checks"
        )
        return EXIT_OK
    if args.command == "check":
        return asyncio.run(check_once(args, loaded))
    if args.command == "demo":
        from . import demo

        return asyncio.run(demo.run(partial(serve, args.listen), args.step))
    return asyncio.run(serve(args.listen, loaded, partial(load_config, args)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
