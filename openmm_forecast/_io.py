"""Files: atomic writes, the output-directory policy of every command, and reading ``.npy`` files.

Atomic writes: a reader, or a run killed mid-write, sees the old file or the new one, never half of one.
"""

import contextlib
import glob
import hashlib
import json
import os

import numpy as np

PARTIAL_MARK = ".partial-"
"""Temporary files of :func:`atomic_write_path` are ``.<name>.partial-<pid>`` next to ``<name>``."""

NPY_MAGIC = b"\x93NUMPY"

ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of a ``.npz`` file (a zip archive) holding at least one array."""


@contextlib.contextmanager
def atomic_write_path(path):
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds.

    The temporary file is removed when the block raises.  The file is synced to disk before the rename,
    and gets ordinary permissions (``0666 & ~umask``, as ``open`` gives), unlike ``tempfile.mkstemp``'s 0600.
    Temporary files of ``path`` left by killed processes (whose PID no longer runs) are removed first.

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
    remove_stale_partials(path)
    temporary = os.path.join(directory, f".{os.path.basename(path)}{PARTIAL_MARK}{os.getpid()}")
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


def remove_stale_partials(path):
    """Remove the temporary files of ``path`` whose writer (the PID in their name) no longer runs.

    Returns
    -------
    list of str
        The files removed.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    pattern = os.path.join(directory, f".{glob.escape(name)}{PARTIAL_MARK}*")
    removed = []
    for candidate in glob.glob(pattern):
        pid = candidate.rsplit(PARTIAL_MARK, 1)[1]
        if pid.isdigit() and not _process_runs(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(candidate)
                removed.append(candidate)
    return removed


def _process_runs(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def file_sha256(path):
    """SHA-256 hex digest of a file's content: files are compared by what they hold, not by their path."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, content, indent=1):
    """Write ``content`` as JSON to ``path`` atomically (see :func:`atomic_write_path`)."""
    with atomic_write_path(path) as temporary:
        with open(temporary, "w") as handle:
            json.dump(content, handle, indent=indent)


def check_output_directory(path, name="output directory", products=(), overwrite=False, hint=None):
    """The output policy of every command, applied before any work is done: never destroy written results.

    Refuses ``path`` when it exists and is not a directory, and when it already holds any of ``products``
    (the files the command writes) unless ``overwrite``.

    Parameters
    ----------
    path : str or os.PathLike
    name : str
        How the user gave ``path`` (``"--out"``), for the message.
    products : iterable of str
        File names, relative to ``path``, that the command writes.
    overwrite : bool
        Allow replacing existing ``products`` (the user asked for it, e.g. ``--overwrite``).
    hint : str, optional
        What to do instead, appended to the message (default: choose another directory).

    Raises
    ------
    ValueError
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {os.fspath(path)!r} is a file, not a directory")
    existing = [product for product in products if os.path.exists(os.path.join(path, product))]
    if existing and not overwrite:
        raise ValueError(
            f"{name} {os.fspath(path)!r} already holds {', '.join(existing)} (nothing was overwritten); "
            + (hint or f"choose another {name}")
        )


def _magic(path, n_bytes):
    """The first ``n_bytes`` of a file, with a DataFileError naming it when it cannot be read."""
    from .errors import DataFileError

    try:
        with open(path, "rb") as handle:
            return handle.read(n_bytes)
    except OSError as error:
        raise DataFileError(f"cannot read {path}: {error}") from error


def load_npy(path, what="array"):
    """``numpy.load`` of a ``.npy`` file, with a clear :class:`~openmm_forecast.errors.DataFileError` for
    anything else (a text file, a truncated or pickled array, a missing file).

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should hold, for the message ("phi/psi in degrees", ...).

    Returns
    -------
    numpy.ndarray
    """
    from .errors import DataFileError

    path = os.fspath(path)
    magic = _magic(path, len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise DataFileError(
            f"{path} is not a NumPy .npy file (it does not start with the .npy header; a text file written by "
            f"np.savetxt?); it should hold {what}, saved with np.save"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataFileError(f"{path} is a damaged or pickled .npy file ({error}); it should hold {what}") from error


def load_npz(path, keys=None, what="arrays"):
    """The arrays ``keys`` of a ``.npz`` file (a cache such as ``samples.npz``), with a clear
    :class:`~openmm_forecast.errors.DataFileError` for anything else: a truncated archive, random bytes, text,
    pickled (object) arrays or missing keys.

    Parameters
    ----------
    path : str or os.PathLike
    keys : iterable of str, optional
        Arrays the file must hold (default: every array it holds).
    what : str
        What the file is, for the message ("the target samples of fit-surrogate", ...).

    Returns
    -------
    dict
        ``{key: numpy.ndarray}``, loaded into memory.
    """
    import zipfile

    from .errors import DataFileError

    path = os.fspath(path)
    advice = f"it should hold {what}; remove it to have it made again"
    magic = _magic(path, len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        raise DataFileError(f"{path} is not a NumPy .npz archive (it does not start like a zip file); {advice}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = archive.files if keys is None else list(keys)
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataFileError(f"{path} lacks the arrays {', '.join(missing)} (it holds "
                                    f"{', '.join(archive.files) or 'none'}); {advice}")
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        if isinstance(error, DataFileError):
            raise
        raise DataFileError(f"{path} is a damaged .npz archive or holds pickled objects ({error}); {advice}") from error
