"""The outage lab: network namespaces holding a fake Meta edge (see topology.py)."""
