"""Wire protocols: each one a router, its schemas, its encoder and its error mapping, all over
the one engine (app/engine/manager.py). One protocol never imports another."""
