"""Stand-ins for the outside world: a local Live API server and loopback audio."""
