"""Who is calling: API keys and the tenants they name, signed stream tokens (app/auth/)."""
