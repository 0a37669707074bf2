"""Who is calling and how much they may do: API keys and the tenants they name, signed stream
tokens, per-key limits (app/auth/)."""
