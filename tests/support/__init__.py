"""Test support: the fake OpenAI-compatible server and the live-server helpers."""
