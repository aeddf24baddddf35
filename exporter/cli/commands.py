"""Command line: `run` (default), `check` (one-shot table), `validate` (config only).

Flags follow the Prometheus style (--config.file, --web.listen-address, --log.level, ...).
Exit codes: 0 ok; 1 (check) some Meta service down or degraded; 2 bad config, or (check)
this vantage is offline so nothing can be said about Meta.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from aiohttp import web

from exporter import __version__
from exporter.config import loader
from exporter.engine.runtime import Runtime
from exporter.spec import Config
from exporter.web import webconfig
from exporter.web.webauth import BasicAuth
from exporter.web.webconfig import WebConfig
from exporter.web.webreload import LiveWebConfig

from . import checkview, logsetup
from .checkview import EXIT_OK, EXIT_VANTAGE_OR_CONFIG

log = logging.getLogger("exporter")

DEFAULT_PORT = 10094
COMMANDS = ("run", "check", "validate", "demo")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
SHUTDOWN_DEADLINE = 10.0  # seconds from SIGTERM to exit, whatever is still running
HTTP_SHUTDOWN_GRACE = 3.0  # seconds open requests (a /probe, a slow scrape) get to finish


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
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for every endpoint (exporter-toolkit's web config format)",
    )
    check = commands.add_parser(
        "check", parents=[common], help="probe everything once and print a table"
    )
    check.add_argument(
        "--json", action="store_true", help="print the /api/v1/status document instead"
    )
    check.add_argument(
        "--watch",
        nargs="?",
        const=15.0,
        type=_positive_seconds,
        metavar="SECONDS",
        help="probe again every SECONDS (default 15) and redraw in place until Ctrl-C",
    )
    check.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="with --watch: stop after N rounds (exit code of the last one)",
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
    loaded = loader.load(args.config_file)
    try:
        return loader.with_overrides(
            loaded, allow=args.allow, deny=args.deny, resolvers=args.resolvers
        )
    except ValueError as exc:
        raise loader.ConfigError(
            [loader.ConfigProblem(loader.Position("<command line>", 1, 1), (), str(exc))]
        ) from None


# -- run -------------------------------------------------------------------------------


async def serve(
    listen: tuple[str | None, int],
    initial: Config,
    loader: Callable[[], Config],
    background: Awaitable[None] | None = None,
    web_config: WebConfig | None = None,
) -> int:
    """Probe and serve until SIGTERM/SIGINT; SIGHUP reloads through `loader`.

    Shutdown: scheduling stops, probes in flight are cancelled, open requests get
    HTTP_SHUTDOWN_GRACE seconds; all of it within SHUTDOWN_DEADLINE, then exit 0.
    """
    # imported here: `check` and `validate` need no web server
    from exporter.web.server import init_app

    runtime = Runtime(initial)
    auth = live_web = None
    if web_config is not None:
        auth = BasicAuth(web_config.users)
        live_web = LiveWebConfig(web_config, auth)
    app = init_app(
        runtime,
        loader,
        auth=auth,
        extra_collectors=[live_web.collector()] if live_web else [],
    )
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_GRACE
    )
    await runner.setup()
    host, port = listen
    site = web.TCPSite(runner, host, port, ssl_context=web_config and web_config.ssl_context)
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
        scheme = web_config.scheme if web_config else "http"
        log.info("listening on %s://%s:%s/ (bound address)", scheme, shown, address[1])
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
    spawn(freeze_when_warm(runtime))
    if live_web is not None:
        spawn(live_web.run())
    await stop.wait()
    log.info("shutting down: no new probes, cancelling those in flight")
    try:
        async with asyncio.timeout(SHUTDOWN_DEADLINE):
            for task in list(tasks):  # a reload in progress must not restart the scheduler
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.stop()  # before the web server, so no probe starts while it winds down
            await runner.cleanup()
    except TimeoutError:
        log.error("shutdown took longer than %gs; exiting anyway", SHUTDOWN_DEADLINE)
    log.info("stopped")
    return EXIT_OK


async def freeze_when_warm(runtime: Runtime, poll: float = 1.0) -> None:
    """Once every check has run, what is alive (modules, config, the app, each check's
    histograms and timer) lives about as long as the process: keep it out of the cyclic
    collector's full passes, which otherwise held the event loop 50-80 ms at 2000 checks
    and skewed every probe timed meanwhile (docs/benchmarks.md). Frozen objects are still
    freed by reference counting; only a frozen cycle would stay, once."""
    while not runtime.store.all_ran():
        await asyncio.sleep(poll)
    gc.collect()
    gc.freeze()


# -- check -----------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _print_round(runtime: Runtime, args: argparse.Namespace, round_: int) -> int:
    """Print one round of `check` (table, JSON, or a --watch frame); returns its exit code."""
    from exporter.web.server import status_document

    document = status_document(runtime.snapshot())
    now = time.time()
    tty = sys.stdout.isatty()
    if args.json:
        # --watch --json: one compact document per line (JSON lines), for pipes.
        print(json.dumps(document, indent=None if args.watch else 2))
    else:
        width = shutil.get_terminal_size().columns if tty else None
        colour = checkview.wants_colour(sys.stdout, os.environ)
        table = checkview.render_table(document, now=now, colour=colour, width=width)
        if args.watch is None:
            print(table, end="")
        else:
            frame = checkview.watch_frame(table, now=now, every=args.watch, round_=round_, tty=tty)
            print(frame, end="")
    sys.stdout.flush()
    return checkview.exit_code(document)


async def check_once(args: argparse.Namespace, loaded: Config) -> int:
    """One round, or with --watch a round every SECONDS (on one runtime, so `since` and
    failure streaks carry over) until --count rounds or Ctrl-C."""
    runtime = Runtime(loaded)
    loop = asyncio.get_running_loop()
    round_ = 0
    while True:
        started = loop.time()
        round_ += 1
        await runtime.check_once()
        code = _print_round(runtime, args, round_)
        if args.watch is None or (args.count is not None and round_ >= args.count):
            return code
        await asyncio.sleep(max(0.0, args.watch - (loop.time() - started)))


# -- entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    logsetup.configure(args.log_level, args.log_format)
    try:
        loaded = load_config(args)
    except loader.ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_VANTAGE_OR_CONFIG
    if args.command == "validate":
        print(
            f"{loaded.source}: OK, {len(loaded.meta_services)} Meta services, "
            f"{len(loaded.checks)} checks"
        )
        return EXIT_OK
    if args.command == "check":
        if args.count is not None and args.watch is None:
            print("--count needs --watch", file=sys.stderr)
            return EXIT_VANTAGE_OR_CONFIG
        try:
            return asyncio.run(check_once(args, loaded))
        except KeyboardInterrupt:  # Ctrl-C ends --watch
            print()
            return EXIT_INTERRUPTED
    if args.command == "demo":
        from . import demo

        return asyncio.run(demo.run(partial(serve, args.listen), args.step))
    try:
        web_config = webconfig.load(args.web_config_file) if args.web_config_file else None
    except loader.ConfigError as exc:
        print(f"invalid web configuration:\n{exc}", file=sys.stderr)
        return EXIT_VANTAGE_OR_CONFIG
    return asyncio.run(
        serve(args.listen, loaded, partial(load_config, args), web_config=web_config)
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
