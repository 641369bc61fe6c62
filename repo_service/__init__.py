"""fwrepo: a secure firmware artifact repository for EV charging networks."""

__version__ = "0.1.0"
