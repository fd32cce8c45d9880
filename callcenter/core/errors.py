"""Errors shared across the project."""


class CallcenterError(Exception):
    """Base of the project's own errors."""


class ConfigError(CallcenterError):
    """A configuration value is wrong; the message names the key and what was expected."""
