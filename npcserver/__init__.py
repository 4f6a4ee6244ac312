"""npcserver: talk to game characters out loud."""

__version__ = "0.1.0"
