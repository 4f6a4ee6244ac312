"""Load generator and latency report for npcserver: `python -m loadtest --help`."""
