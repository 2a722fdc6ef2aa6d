"""Checkpoint files of an accelerated run.

A checkpoint is a zip archive with two members:

``context.chk``
    ``Context.createCheckpoint()`` bytes: positions, velocities, box, time, step count and the
    integrator's random state (specific to the platform and OpenMM version that wrote it).
``record.json``
    Everything else needed to continue without losing or repeating a frame: the format version, the
    fingerprints of the System (:func:`openmm_forecast.systems.system_fingerprint`) and of the forecaster
    (:func:`forecaster_fingerprint`), the step count, the accelerator's own state (current span, drift,
    counters), its statistics and the state of its random stream.

OpenMM loads a checkpoint into any Context of the right size without complaint; :func:`read_checkpoint`
refuses one written for a different System or forecaster (:class:`~openmm_forecast.errors.CheckpointError`).
:func:`write_checkpoint` is atomic: it writes a temporary file next to the target and renames it over the
target, so a process killed while saving leaves the previous checkpoint intact.
"""

import hashlib
import json
import os
import zipfile

from ._io import atomic_write_path, file_sha256
from .errors import CheckpointError

FORMAT = "openmm-forecast-checkpoint"
FORMAT_VERSION = 1

_CONTEXT_MEMBER = "context.chk"
_RECORD_MEMBER = "record.json"


def forecaster_fingerprint(forecaster):
    """SHA-256 hex digest of a forecaster's metadata JSON (architecture, elements, stride, training data...) and,
    for a learned forecaster, of its weights (a retrained model with the same metadata is another forecaster).

    A metadata value that names an existing file (a surrogate System's ``.xml``) counts by the file's content,
    not its path: the same file by another path, or a byte-identical copy, is the same forecaster.
    """
    text = forecaster.metadata.to_json()
    metadata = json.loads(text)
    by_content = _files_by_content(metadata)
    if by_content != metadata:  # (metadata naming no file keeps the fingerprint of earlier checkpoints)
        text = json.dumps(by_content, sort_keys=True)
    digest = hashlib.sha256(text.encode())
    module = getattr(forecaster, "module", None)
    if module is not None:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _files_by_content(value):
    """``value`` (JSON types) with every string that names an existing file replaced by ``sha256:<its content's>``."""
    if isinstance(value, dict):
        return {key: _files_by_content(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_files_by_content(item) for item in value]
    if isinstance(value, str) and os.path.isfile(value):
        return f"sha256:{file_sha256(value)}"
    return value


def write_checkpoint(path, context_bytes, record):
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its directory must exist.
    context_bytes : bytes
        ``Context.createCheckpoint()``.
    record : dict
        JSON-serialisable accelerator record (format fields are added here).
    """
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **record}
    with atomic_write_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_RECORD_MEMBER, json.dumps(record, indent=1, sort_keys=True))
            archive.writestr(_CONTEXT_MEMBER, context_bytes)


def read_checkpoint(path, system_fingerprint, forecaster_fingerprint):
    """Read a checkpoint and check that it belongs to this System and forecaster.

    Parameters
    ----------
    path : str or os.PathLike
    system_fingerprint, forecaster_fingerprint : str
        Fingerprints of the System and forecaster that will continue the run.

    Returns
    -------
    context_bytes : bytes
    record : dict

    Raises
    ------
    CheckpointError
        Missing, unreadable or corrupt file, an unknown format, or fingerprints that differ.
    """
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read(_RECORD_MEMBER))
            context_bytes = archive.read(_CONTEXT_MEMBER)
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from error
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or not an openmm-forecast checkpoint: {error}"
        ) from error
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format {record.get('format')!r} version {record.get('format_version')!r}; "
            f"this openmm-forecast reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    if record.get("system_fingerprint") != system_fingerprint:
        raise CheckpointError(
            f"checkpoint {path!r} was written for a different System (fingerprint "
            f"{str(record.get('system_fingerprint'))[:12]}..., this one {system_fingerprint[:12]}...); "
            "load it into a simulation of the same System"
        )
    if record.get("forecaster_fingerprint") != forecaster_fingerprint:
        raise CheckpointError(
            f"checkpoint {path!r} was written with a different forecaster (fingerprint "
            f"{str(record.get('forecaster_fingerprint'))[:12]}..., this one {forecaster_fingerprint[:12]}...); "
            "continue the run with the forecaster that started it"
        )
    return context_bytes, record
