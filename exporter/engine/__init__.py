"""Running a config and judging it: scheduler, store, verdict, history, headline, runtime.

Never imports web/ or cli/: readers get a frozen Snapshot. See docs/architecture.md.
"""
