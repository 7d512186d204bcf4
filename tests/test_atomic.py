"""Atomic outputs: a file or folder appears at its path only when it was written completely."""

import pytest

from cropflow.atomic import atomic_path


def test_file_appears_only_on_success(tmp_path):
    final = tmp_path / "sub" / "table.csv"
    with atomic_path(final) as tmp:
        assert tmp.parent.parent == final.parent  # a sibling: same file system, so the rename is atomic
        assert tmp.suffix == ".csv"               # drivers that pick the format from the suffix still work
        tmp.write_text("a,b\n1,2\n")
        assert not final.exists()
    assert final.read_text() == "a,b\n1,2\n"
    assert [p.name for p in final.parent.iterdir()] == ["table.csv"]


def test_existing_file_is_replaced_on_success(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"  # the old output stays readable while the new one is written
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_existing_file_survives_a_failed_write(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "new.tif") as tmp:
            tmp.write_bytes(b"II*\x00")
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_nothing_written_raises_naming_the_output(tmp_path):
    final = tmp_path / "model.keras"
    final.write_text("old")
    with pytest.raises(FileNotFoundError, match="model.keras"):
        with atomic_path(final):
            pass
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_directory_output_appears_only_on_success(tmp_path):
    final = tmp_path / "cubes" / "E0320000N5330000.zarr"
    with atomic_path(final, directory=True) as tmp:
        assert tmp.suffix == ".zarr"
        (tmp / "features").mkdir(parents=True)
        (tmp / "features" / "c.0").write_bytes(b"\x00")
        (tmp / "zarr.json").write_text("{}")
        assert not final.exists()
    assert final.is_dir()
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["features", "features/c.0",
                                                                                "zarr.json"]
    assert [p.name for p in final.parent.iterdir()] == ["E0320000N5330000.zarr"]


def test_existing_directory_is_replaced_not_merged(tmp_path):
    final = tmp_path / "train.zarr"
    final.mkdir()
    (final / "stale").write_text("from the previous run")
    (final / "y").write_text("old")
    with atomic_path(final, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["y"]
    assert (final / "y").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["train.zarr"]


def test_existing_directory_survives_a_failed_write(tmp_path):
    final = tmp_path / "train.zarr"
    final.mkdir()
    (final / "y").write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(final, directory=True) as tmp:
            tmp.mkdir()
            (tmp / "y").write_text("half")
            raise ValueError("interrupted")
    assert sorted(p.name for p in final.iterdir()) == ["y"]
    assert (final / "y").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["train.zarr"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    final = tmp_path / "E0320000N5330000.zarr"
    killed = tmp_path / ".E0320000N5330000.zarr.k1ll3d_0.part"
    (killed / "out.zarr").mkdir(parents=True)
    (killed / "out.zarr" / "zarr.json").write_text("{half")
    other = tmp_path / ".E0320000N5330000.zarr.json.x1y2.part"  # another output's temporary stays
    other.mkdir()
    with atomic_path(final, directory=True) as tmp:
        assert not killed.exists() and other.exists()
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, final.name]
