"""Applied state per environment: what was applied, audit log, locks. SQLite by default."""
