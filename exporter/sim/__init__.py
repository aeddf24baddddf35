"""A simulated Meta for the outage lab, the demo and the tests: DNS, front ends, edges, feeds.

Stands outside the exporter: imports only net/ (DNS wire code) and the vocabulary.
"""
