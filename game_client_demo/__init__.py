"""Reference game clients: the browser page in web/ and the command-line client (`python -m game_client_demo.cli`)."""
