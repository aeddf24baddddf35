"""Drive the lab from a shell (as root):

    python -m tests.lab up                 build a lab, start the exporter, print its URL; Ctrl-C tears down
    python -m tests.lab down [--all]       tear down leftover labs of this machine (ours only: mox-lab-*)
    python -m tests.lab list               leftover labs

While `up` runs, another shell can inject faults through the sim nodes' unix sockets
(printed by `up`), e.g. curl --unix-socket /tmp/mox-lab-XXXX/meta.sock -X PUT
-d '{"zone":"facebook.com","fault":"servfail"}' http://lab/dns/faults
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from . import netns
from .topology import Lab, leftover_runs, teardown_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    down = sub.add_parser("down")
    down.add_argument("--all", action="store_true", help="every leftover lab, not only the newest")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (why := netns.require_root()) is not None:
        print(why, file=sys.stderr)
        return 2
    if args.command == "list":
        for run in leftover_runs():
            print(run)
        return 0
    if args.command == "down":
        runs = sorted(leftover_runs(), key=lambda p: p.stat().st_mtime)
        for run in runs if args.all else runs[-1:]:
            teardown_run(run)
            print(f"removed {run}")
        return 0
    lab = Lab().up()
    print(
        f"lab {lab.run_id} up: exporter {lab.exporter_url}/  (status: {lab.exporter_url}/api/v1/status)"
    )
    print(f"fault sockets: {lab.run_dir}/meta.sock {lab.run_dir}/net.sock; Ctrl-C to tear down")
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
