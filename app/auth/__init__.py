"""Keys, tenants, signed stream tokens, per-key limits."""
