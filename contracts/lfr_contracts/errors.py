"""Errors that more than one side raises and catches."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""
