"""Atomic writes: all or nothing, ordinary permissions."""

import json
import os
import stat

import pytest

from openmm_forecast._io import atomic_write_path, write_json


def test_failed_write_leaves_the_previous_file_and_no_debris(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_write_path(path) as temporary:
            with open(temporary, "w") as handle:
                handle.write('{"version": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["report.json"]


def test_new_files_get_umask_permissions_not_private_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", [1])
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
