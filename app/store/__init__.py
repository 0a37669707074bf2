"""Run stores (the `RunStore` port, app/engine/ports.py), the SQLite connection they share with
the checkpointer, the single-writer guard, and the rewinders (the `Rewinder` port).

`SqliteRunStore` (the embedded default, same file as the checkpoints) and `MemoryRunStore`
(`DATABASE_URL=memory://`, for tests and throwaway servers) pass the same conformance suite
(tests/conformance/test_run_store.py).
"""
