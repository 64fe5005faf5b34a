"""Venue → Kafka bridge: authenticated crypto-venue account feeds as versioned Avro on Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
