"""Optional outside signals: Meta's official status page and live BGP for Meta's prefixes.

Pure state and parsing live in official.py and bgp.py; the network side (policed HTTP and
WebSocket clients with backoff) in transport.py, pollers.py and rislive.py; feedset.py owns
their tasks. A feed that cannot be reached is reported as unreachable, never as a Meta outage.
"""
