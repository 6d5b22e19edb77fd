"""CoinGecko-compatible replay server with fault injection (see docs/replay-server.md).

Depends only on the standard library and PyYAML: it runs in the light ingest image too.
"""

from .server import ReplayServer

__all__ = ["ReplayServer"]
