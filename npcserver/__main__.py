from npcserver.cli import entry_point

entry_point()
