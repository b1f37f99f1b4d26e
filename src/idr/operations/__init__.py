"""Running a node: backup and restore, access and error logs, reload of settings (SIGHUP)."""
