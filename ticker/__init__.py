"""Live sales ticker: replays a festival day through Redis Streams to browsers and programs."""

__version__ = "0.1.0"
