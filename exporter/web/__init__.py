"""Everything a scraper, browser or API client reads: /metrics, status page, API, /probe.

Also the web config file (TLS and basic auth, reloaded live). Reads the engine; nothing
below imports it. See docs/architecture.md.
"""
