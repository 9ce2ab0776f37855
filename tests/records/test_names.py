"""The table of the files a run writes: every name once, and the ones a fresh run deletes never the log or lock."""

from __future__ import annotations

from sparseprop import records
from sparseprop.records import names


def test_the_table_names_each_file_once():
    files = records.record_files()
    assert len(set(files)) == len(files)
    data = {records.SUMMARY, records.METRICS, records.LAYERS, records.SIGNAL, records.ISOMETRY, records.SPECTRA,
            records.CHECKPOINT, records.PREVIOUS_CHECKPOINT, records.COMPLETE}
    assert len(data) == 9 and data == set(records.DATA_FILES) and data <= set(files)
    assert {f"{s}.{e}" for s in records.FIGURES for e in records.FIGURE_FORMATS} == set(files) - data
    # the log is emptied and the lock held, never deleted; .hydra/ is rewritten by each job
    assert not {records.LOG, records.LOCK, records.HYDRA_DIR} & set(files)
    for path in (records.HYDRA_CONFIG, records.HYDRA_SETTINGS, records.HYDRA_OVERRIDES):
        assert path.startswith(f"{records.HYDRA_DIR}/")


def test_the_package_re_exports_the_table():
    public = [n for n in vars(names) if n.isupper() or n == "record_files"]
    assert public and all(getattr(records, n) is getattr(names, n) for n in public)
    assert set(public) <= set(records.__all__)


def test_overwrite_json_rewrites_the_file_in_place_and_refuses_a_link(tmp_path):
    import json
    import os

    import pytest

    from sparseprop import records

    path = tmp_path / records.SUMMARY
    path.write_text(json.dumps({"status": "running", "padding": "x" * 500}))
    inode = path.stat().st_ino
    records.overwrite_json(path, {"status": "failed", "reason": "disk full"})
    assert json.loads(path.read_text()) == {"status": "failed", "reason": "disk full"}
    assert path.stat().st_ino == inode  # the same file: no temporary, no rename
    link = tmp_path / "link.json"
    os.symlink(path, link)
    with pytest.raises(records.RecordsError, match="cannot write"):
        records.overwrite_json(link, {"status": "failed"})
    assert json.loads(path.read_text())["reason"] == "disk full"
