"""HTTP routes: thin, they validate and translate; the work is in app/runs and app/sse."""
