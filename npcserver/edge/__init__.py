"""The network edge: the WebSocket and HTTP server (the only server-side module that speaks WebSocket),
plain HTTP replies, tokens and origins, abuse limits, and the Prometheus metrics."""
