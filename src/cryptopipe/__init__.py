"""cryptopipe: the stage programs of the crypto market-data pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryptopipe")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
