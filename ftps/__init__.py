"""The FTPS server for chargers that fetch firmware over FTP (built in the FTPS issue)."""
