"""Runs: starting, mapping, logging and cancelling graph executions."""
