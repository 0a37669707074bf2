"""Event log implementations (the `EventLog` port, app/engine/ports.py)."""
