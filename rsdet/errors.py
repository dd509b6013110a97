"""Exceptions with messages meant for a person: each names the offending file or value and the fix."""


class RsdetError(Exception):
    """Base class for every error rsdet raises on purpose (bad input, bad config, failed run)."""


class DataError(RsdetError):
    """A dataset or annotation/results file is missing or malformed."""


class ConfigError(RsdetError):
    """A configuration value is invalid or inconsistent."""


class TrainingError(RsdetError):
    """Training cannot continue (e.g. a NaN/inf loss); the last good checkpoint is kept."""
