"""Exceptions raised by bkgxr.

Every error about a run carries the run's ``obs_id`` and ``path`` and starts
its message with them, e.g. ``run 23523 (obs_023523.fits.gz): EVENTS lacks
ENERGY``.
"""

from __future__ import annotations

from pathlib import Path


class BkgxrError(Exception):
    """Base class of all bkgxr errors."""


class UnitError(BkgxrError, ValueError):
    """A unit that is unknown or not convertible to the expected one."""


class StoreError(BkgxrError, ValueError):
    """A data store whose index tables are missing, unreadable or inconsistent."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        prefix = f"{self.path}: " if self.path is not None else ""
        super().__init__(prefix + message)


class EmptySelectionError(BkgxrError, ValueError):
    """A run selection that matches no run."""


class InvalidRunError(BkgxrError, ValueError):
    """A run whose file, HDUs, columns, keywords or values cannot be used."""

    def __init__(self, obs_id: int | None, path: str | Path | None, reason: str) -> None:
        self.obs_id = obs_id
        self.path = None if path is None else Path(path)
        self.reason = reason
        name = self.path.name if self.path is not None else "no file"
        super().__init__(f"run {obs_id} ({name}): {reason}")

    def __reduce__(self) -> tuple[type, tuple[int | None, Path | None, str]]:
        # Keeps the error picklable, so it crosses dask worker boundaries intact.
        return (type(self), (self.obs_id, self.path, self.reason))
