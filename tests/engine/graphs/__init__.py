"""Graphs of the run phase tests (tests/engine/test_run_phases.py), loaded with
`GraphRegistry.load`. Their nodes are steered by the runtime context, a `Controls` the test
builds inside its own event loop and hands to the `RunManager` as its context."""
