"""secserver: a security server for signed, access-checked, logged data exchange."""

__version__ = "0.1.0"
