"""Atomic file writes: a reader, or a run killed mid-write, sees the old file or the new one, never half of one."""

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_write_path(path):
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds.

    The temporary file is removed when the block raises.  The file is synced to disk before the rename,
    and gets ordinary permissions (``0666 & ~umask``, as ``open`` gives), unlike ``tempfile.mkstemp``'s 0600.

    Parameters
    ----------
    path : str or os.PathLike
        Final location; its directory is created if needed.

    Yields
    ------
    str
        Where to write the content.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.partial-{os.getpid()}")
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, content, indent=1):
    """Write ``content`` as JSON to ``path`` atomically (see :func:`atomic_write_path`)."""
    with atomic_write_path(path) as temporary:
        with open(temporary, "w") as handle:
            json.dump(content, handle, indent=indent)


def check_output_directory(path, name="output directory"):
    """Refuse ``path`` (before any work is done) when it exists and is not a directory."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {os.fspath(path)!r} is a file, not a directory")
