"""Server-Sent Events: the wire format and the per-subscriber stream."""
