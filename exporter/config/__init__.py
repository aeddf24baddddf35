"""Reading configuration: YAML over the built-in catalogue, compiled into `spec.Config`.

Every problem is located by file, line and key path. Imports the vocabulary, net and
probes (each kind's parameters); see docs/architecture.md.
"""
