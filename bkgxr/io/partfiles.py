"""The temporary ``.part`` files of atomic writes: their names, signals held off while one exists, stale ones removed.

:func:`bkgxr.io.write.write_atomic` writes ``<folder>/<name>`` through a
hidden temporary file beside it, ``<folder>/.<name>.<host>.<pid>.<random>.part``,
and renames it into place. SIGINT, SIGTERM and SIGHUP are held off
(:func:`signals_held`) from the moment that file is created until it is
renamed or removed, so a signal never leaves one behind; it takes effect
right after (the write itself is one call on bytes held in memory). Only a process killed outright (SIGKILL, power loss) can leave
one, and the next write of the same output removes it (:func:`remove_stale`)
when all of these hold:

- its name is ``.<name>.`` ... ``.part`` for exactly that output name;
- it is a regular file (not a link or a folder) owned by the current user;
- its writer is gone: the name carries this host and a process id that no
  longer runs, or the file was last modified more than :data:`STALE_SECONDS`
  ago (files of other hosts, whose processes cannot be checked from here, and
  of older bkgxr versions, whose names carry no process id).

A temporary file of a writer still running on this host is never removed, nor
any other file of the folder.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

#: Suffix of the temporary files.
PART_SUFFIX = ".part"
#: A temporary file unchanged for this long (s) is stale, whoever wrote it.
STALE_SECONDS = 15 * 60
#: Signals held off while a temporary file exists.
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _host() -> str:
    """Return this host's name as it goes into a temporary file's name (no separators)."""
    return socket.gethostname().replace(os.sep, "-") or "localhost"


def part_prefix(path: Path) -> str:
    """Return the prefix of the temporary files of ``path`` written by this process (for ``tempfile.mkstemp``)."""
    return f".{path.name}.{_host()}.{os.getpid()}."


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _writer_gone(middle: str, mtime: float, now: float) -> bool:
    """Whether the writer of a temporary file named ``.<name>.<middle>.part`` is gone (see the module docstring)."""
    if now - mtime > STALE_SECONDS:
        return True
    host, _, pid = middle.rpartition(".")[0].rpartition(".")  # <host>.<pid>.<random>
    return host == _host() and pid.isdigit() and not _running(int(pid))


def remove_stale(path: Path) -> list[Path]:
    """Remove the stale temporary files of the output ``path`` and return them (see the module docstring).

    Files that cannot be inspected or removed (gone meanwhile, no permission)
    are left alone.
    """
    start, removed, now = f".{path.name}.", [], time.time()
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(start) and n.endswith(PART_SUFFIX)]
    except OSError:
        return []
    for name in names:
        candidate = path.parent / name
        try:
            info = os.lstat(candidate)
            if (stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
                    and _writer_gone(name[len(start):-len(PART_SUFFIX)], info.st_mtime, now)):
                os.unlink(candidate)
                removed.append(candidate)
        except OSError:
            continue
    return removed


@contextmanager
def handling(signals: Iterable[int], handler: Callable[[int, object], None]) -> Iterator[None]:
    """Handle ``signals`` with ``handler`` in the block, then restore the previous handlers.

    Signals a parent set to be ignored (or whose handler is not Python's)
    are left alone. Call from the main thread: only it may change handlers.
    """
    previous = {s: signal.getsignal(s) for s in signals}
    swapped = {s: h for s, h in previous.items() if h is not None and h is not signal.SIG_IGN}
    for s in swapped:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in swapped.items():
            signal.signal(s, old)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold off :data:`HELD_SIGNALS` for the block; one that arrived meanwhile is raised again when it ends.

    Python runs signal handlers in the main thread, whichever thread the
    signal reached, so the main thread's handlers are swapped for one that
    only records the signal, and the previous ones restored after the block
    (a default action, like SIGTERM's, then takes effect too). Ignored
    signals stay ignored. Outside the main thread, whose handlers cannot be
    changed, the block runs unchanged: a signal there stops the main thread,
    and this thread's block completes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def record(signum: int, frame: object) -> None:
        arrived.append(signum)

    try:
        with handling(HELD_SIGNALS, record):
            yield
    finally:
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)
