"""Networking: a py-libp2p host in a trio thread behind an asyncio facade (see host.py, streams.py, relay.py)."""

from ffnode.net.host import Handlers, NetError, NetHost
from ffnode.net.relay import Relaying

__all__ = ["Handlers", "NetError", "NetHost", "Relaying"]
