"""Run the exporter's CLI under a Python audit hook that records every outbound network call.

Usage: python audited_cli.py REPORT.json <cli args...>. The report lists each socket.connect /
sendto / sendmsg destination and every libc name lookup (getaddrinfo, gethostbyname...).
Used by the egress-policy tests to prove what the exporter did NOT send.
"""

from __future__ import annotations

import json
import sys

NETWORK_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg"}
LOOKUP_EVENTS = {
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.gethostbyaddr",
    "socket.getnameinfo",
}


def main() -> int:
    report_path, argv = sys.argv[1], sys.argv[2:]
    connects: list[str] = []
    lookups: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in NETWORK_EVENTS and len(args) >= 2:
            connects.append(repr(args[1]))
        elif event in LOOKUP_EVENTS:
            lookups.append(repr(args[:2]))

    sys.addaudithook(hook)
    from exporter.cli.commands import main as cli_main

    try:
        code = cli_main(argv)
    finally:
        with open(report_path, "w") as report:
            json.dump({"connects": connects, "lookups": lookups}, report)
    return code


if __name__ == "__main__":
    sys.exit(main())
