"""Run stores (the `RunStore` port, app/engine/ports.py), the SQLite connection they share with
the checkpointer, the single-writer guard, the PostgreSQL pool, and the rewinders (the
`Rewinder` port).

`SqliteRunStore` (the embedded default, same file as the checkpoints), `PostgresRunStore`
(`DATABASE_URL=postgresql://...`, same database as the checkpoints, several workers) and
`MemoryRunStore` (`DATABASE_URL=memory://`, for tests and throwaway servers) pass the same
conformance suite (tests/conformance/test_run_store.py).
"""
