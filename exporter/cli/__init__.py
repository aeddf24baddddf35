"""What users type: `run`, `check`, `validate` and `demo`, the `check` output, logging.

The top room: it may import every other one. See docs/architecture.md.
"""
