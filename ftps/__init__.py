"""The FTPS server: one-time grant logins, a read-only one-file view, explicit and implicit TLS (pyftpdlib)."""
