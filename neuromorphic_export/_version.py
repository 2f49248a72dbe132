"""The package version, stamped into every file the exporter writes."""

__version__ = "0.1.0"
