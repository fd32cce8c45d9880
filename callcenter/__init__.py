"""callcenter: a telephony-first contact center server."""

__version__ = "0.1.0"
