"""Errors a user can cause, each saying what is wrong, what was expected, what was found and how to fix it."""
from __future__ import annotations


class FinegrainError(Exception):
    """Base class: every error finegrain raises on purpose derives from it (the CLI exits 1 or 2 on them)."""

    exit_code = 1

    def __init__(self, what: str, *, expected: str | None = None, found: str | None = None,
                 fix: str | None = None) -> None:
        self.what, self.expected, self.found, self.fix = what, expected, found, fix
        parts = [what]
        if expected is not None:
            parts.append(f"expected: {expected}")
        if found is not None:
            parts.append(f"found: {found}")
        if fix is not None:
            parts.append(f"fix: {fix}")
        super().__init__("\n  ".join(parts))


class DataError(FinegrainError):
    """The data a user pointed at is missing, malformed or unusable."""


class ConfigError(FinegrainError):
    """An option or argument has a value finegrain cannot use (bad usage: exit code 2)."""

    exit_code = 2


class NotFittedError(FinegrainError):
    """An estimator was used before `fit`."""


class MissingExtraError(FinegrainError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""

    def __init__(self, package: str, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed",
            expected=f"'{package}' importable",
            found="ImportError",
            fix=f"pip install 'finegrain[{extra}]'",
        )


class ImageError(FinegrainError):
    """One image could not be decoded; callers turn it into an error record, never a crash of the run."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read image {path}: {reason}",
                         fix="remove or replace the file, or leave it: the run records it and goes on")


class PixelLimitError(ImageError):
    """An image declares more pixels than allowed (a decompression-bomb guard): refused before decoding, and
    told apart from unreadable files so a server can answer 413 rather than 422."""
