"""The server end: an asyncssh SSH server that accepts units' reverse forwards (the demo's, for now)."""
