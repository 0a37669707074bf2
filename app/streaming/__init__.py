"""The generic subscriber: reads a run's log from its own cursor and turns events into sends,
whatever the wire protocol (the protocol's `Encoder` frames each payload)."""
