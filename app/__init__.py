"""A streaming HTTP service for LangGraph graphs."""
