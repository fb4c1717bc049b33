"""Access to the API server: every request the operator makes goes through here."""
