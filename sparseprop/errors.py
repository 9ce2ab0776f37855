"""Errors a user can cause, reported by the CLI as one line and exit code 2."""


class SparsepropError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class ConfigError(SparsepropError):
    """A configuration value that is wrong: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not valid: {allowed}")


class DataError(SparsepropError):
    """A dataset that is missing, unreadable or incompatible."""


class NoSignalError(SparsepropError):
    """A pruning criterion whose scores are at the rounding level of their own computation."""
