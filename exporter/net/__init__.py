"""The exporter's own networking, below the probers: name resolution, DNS, capped bodies.

Imports only the top-level vocabulary (model, spec, egress); see docs/architecture.md.
"""
