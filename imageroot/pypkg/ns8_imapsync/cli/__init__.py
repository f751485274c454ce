"""Command-line entry points: syncctl (container), bin/ helpers (host)."""
