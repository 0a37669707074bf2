"""Cancel broker implementations (the `CancelBroker` port, app/engine/ports.py)."""
