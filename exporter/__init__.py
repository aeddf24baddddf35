"""meta-outage-exporter: is Meta down, at which layer, since when — or is it us?"""

__version__ = "0.1.0"
