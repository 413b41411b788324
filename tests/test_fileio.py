"""common.fileio on local disk and on gs:// (a real GCS emulator, tests/gcs_emulator.py).

Every behaviour test runs twice, on a local directory and on a fresh emulator bucket, with the
same assertions: fileio must behave identically for both.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec
import numpy as np
import pytest
from affine import Affine

from common import fileio

# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
    """A base URI with nothing under it: a local directory or ``gs://<fresh bucket>``."""
    if request.param == "local":
        path = tmp_path / "root"
        path.mkdir()
        return str(path)
    return request.getfixturevalue("gcs_bucket")


def j(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if "://" in base else os.path.join(base, *parts)


def put(uri: str, data: bytes) -> None:
    """Create a file or object straight through fsspec (set-up that does not use fileio)."""
    fs, path = fsspec.core.url_to_fs(uri)
    if "://" not in uri:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def read_back(uri: str, emulator=None) -> bytes:
    """Contents as stored: from disk, or straight from the emulator's storage (not via gcsfs)."""
    if uri.startswith("gs://"):
        bucket, _, name = uri[len("gs://"):].partition("/")
        return emulator.object_bytes(bucket, name)
    with open(uri, "rb") as f:
        return f.read()


def listing(root: str, emulator=None) -> list[str]:
    """Every file/object under ``root`` as relative names, read without fileio."""
    if root.startswith("gs://"):
        return emulator.object_names(root[len("gs://"):])
    out = []
    for dirpath, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


@pytest.fixture
def emu(request, root):
    return request.getfixturevalue("gcs_emulator") if root.startswith("gs://") else None


@pytest.fixture
def tree(root) -> str:
    """A small tree of files under ``root``; returns ``root``."""
    for name in ["x/a.tif", "x/b.tif", "x/c.txt", "x/sub/d.tif", "x/sub/deep/e.tif",
                 "xy/f.tif", "top.tif"]:
        put(j(root, *name.split("/")), name.encode())
    return root


# -- match ------------------------------------------------------------------------------------


def test_match_star_glob(tree):
    assert fileio.match(j(tree, "x", "*.tif")) == [j(tree, "x", "a.tif"), j(tree, "x", "b.tif")]
    assert fileio.match(j(tree, "x", "?.t*")) == [
        j(tree, "x", "a.tif"), j(tree, "x", "b.tif"), j(tree, "x", "c.txt")]
    assert fileio.match(j(tree, "x", "[ab].tif")) == [j(tree, "x", "a.tif"), j(tree, "x", "b.tif")]


def test_match_double_star_recurses(tree):
    assert fileio.match(j(tree, "x", "**", "*.tif")) == [
        j(tree, "x", "a.tif"), j(tree, "x", "b.tif"),
        j(tree, "x", "sub", "d.tif"), j(tree, "x", "sub", "deep", "e.tif"),
    ]
    assert fileio.match(j(tree, "**", "e.tif")) == [j(tree, "x", "sub", "deep", "e.tif")]


def test_match_directory_lists_files_recursively(tree):
    expected = [j(tree, "x", n) for n in ["a.tif", "b.tif", "c.txt", "sub/d.tif", "sub/deep/e.tif"]]
    expected = [e.replace("/", os.sep) if "://" not in e else e for e in expected]
    assert fileio.match(j(tree, "x")) == sorted(expected)
    assert fileio.match(j(tree, "x") + "/") == sorted(expected)  # trailing slash: same
    # A prefix is not a directory of its own: x/ does not pick up xy/.
    assert j(tree, "xy", "f.tif") not in fileio.match(j(tree, "x"))


def test_match_single_file_and_missing(tree):
    assert fileio.match(j(tree, "top.tif")) == [j(tree, "top.tif")]
    assert fileio.match(j(tree, "nope.tif")) == []
    assert fileio.match(j(tree, "nope")) == []
    assert fileio.match(j(tree, "x", "*.jpg")) == []
    assert fileio.match(j(tree, "missing-dir", "*.tif")) == []
    assert fileio.match(j(tree, "missing-dir", "**", "*.tif")) == []


def test_match_hides_publish_temporaries(tree):
    put(j(tree, "x", f".a.tif.{uuid.uuid4().hex}.tmp"), b"partial")
    put(j(tree, "x", f".tileseg-write-check-{uuid.uuid4().hex}"), b"ok")
    assert fileio.match(j(tree, "x", "*")) == [
        j(tree, "x", "a.tif"), j(tree, "x", "b.tif"), j(tree, "x", "c.txt")]
    assert all(".tmp" not in p and "write-check" not in p for p in fileio.match(j(tree, "x")))


def test_match_follows_local_symlinks_to_files_and_keeps_broken_ones(tmp_path):
    """Links to files are inputs; links that lead nowhere are kept too, so the run reports them
    as failures instead of dropping them; links to folders are not followed."""
    target = tmp_path / "elsewhere" / "real.tif"
    put(str(target), b"real")
    d = tmp_path / "in"
    d.mkdir()
    os.symlink(target, d / "link.tif")
    os.symlink(tmp_path / "missing.tif", d / "dangling.tif")
    os.symlink(tmp_path / "elsewhere", d / "folder_link")
    put(str(d / "plain.tif"), b"plain")
    expected = [str(d / "dangling.tif"), str(d / "link.tif"), str(d / "plain.tif")]
    assert fileio.match(str(d)) == expected
    assert fileio.match(str(d / "*.tif")) == expected
    assert fileio.match(str(d / "link.tif")) == [str(d / "link.tif")]


def test_match_skips_gcs_directory_placeholders(gcs_bucket, gcs_emulator):
    """Console-made "folders" are zero-byte objects named "x/": never listed as files."""
    put(j(gcs_bucket, "ph", "a.tif"), b"a")
    fs, _ = fsspec.core.url_to_fs(gcs_bucket)
    fs.pipe_file(gcs_bucket[len("gs://"):] + "/ph/", b"")
    fs.pipe_file(gcs_bucket[len("gs://"):] + "/empty/", b"")
    assert gcs_emulator.object_names(gcs_bucket[len("gs://"):]) == ["empty/", "ph/", "ph/a.tif"]
    assert fileio.match(j(gcs_bucket, "ph")) == [j(gcs_bucket, "ph", "a.tif")]
    assert fileio.match(j(gcs_bucket, "**")) == [j(gcs_bucket, "ph", "a.tif")]
    assert fileio.match(gcs_bucket) == [j(gcs_bucket, "ph", "a.tif")]
    assert fileio.match(j(gcs_bucket, "empty")) == []
    fileio.remove(j(gcs_bucket, "ph"), recursive=True)
    assert gcs_emulator.object_names(gcs_bucket[len("gs://"):]) == ["empty/"]


def test_match_missing_bucket_is_empty(gcs_emulator):
    assert fileio.match("gs://no-such-bucket-tileseg/x/*.tif") == []
    assert fileio.match("gs://no-such-bucket-tileseg/x.tif") == []


def test_file_scheme_is_plain_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    put(str(tmp_path / "d" / "a.tif"), b"a")
    assert fileio.match(f"file://{tmp_path}/d/*.tif") == [str(tmp_path / "d" / "a.tif")]
    assert fileio.glob_root(f"file://{tmp_path}/d/*.tif") == str(tmp_path / "d")
    assert fileio.exists(f"file://{tmp_path}/d/a.tif")
    fileio.makedirs(f"file://{tmp_path}/made/here")
    assert (tmp_path / "made" / "here").is_dir()
    assert not os.path.exists("file:")  # not a directory literally named "file:"


# -- glob_root --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/a/b/*.tif", "/a/b"),
        ("/a/b/**/*.tif", "/a/b"),
        ("/a/b/c?.tif", "/a/b"),
        ("/a/b/[xy]/*.tif", "/a/b"),
        ("/*.tif", "/"),
        ("/a/b/c.tif", "/a/b"),  # a single file: its directory
        ("gs://bkt/x/*.tif", "gs://bkt/x"),
        ("gs://bkt/x/**/*.tif", "gs://bkt/x"),
        ("gs://bkt/*.tif", "gs://bkt"),
        ("file:///a/b/*.tif", "/a/b"),
    ],
)
def test_glob_root_patterns(pattern, expected):
    assert fileio.glob_root(pattern) == expected


def test_glob_root_relative_is_absolute_like_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    put(str(tmp_path / "data" / "t" / "a.tif"), b"a")
    assert fileio.glob_root("data/**/*.tif") == str(tmp_path / "data")
    assert fileio.glob_root("*.tif") == str(tmp_path)
    assert fileio.match("data/**/*.tif") == [str(tmp_path / "data" / "t" / "a.tif")]


def test_glob_root_directory_and_tile_ids(tree):
    assert fileio.glob_root(j(tree, "x")) == j(tree, "x")
    assert fileio.glob_root(j(tree, "x") + "/") == j(tree, "x")
    assert fileio.glob_root(j(tree, "x", "sub", "d.tif")) == j(tree, "x", "sub")
    for pattern in [j(tree, "x", "**", "*.tif"), j(tree, "x")]:
        root = fileio.glob_root(pattern)
        rel = posixpath.relpath if "://" in root else os.path.relpath
        uris = fileio.match(pattern)
        sep = "/" if "://" in root else os.sep
        assert uris and all(u.startswith(root + sep) for u in uris)  # same form: prefix-strippable
        ids = [rel(uri, root) for uri in uris]
        assert ids and all(i.split(os.sep)[0] not in ("..", "") for i in ids)
        assert "sub/d.tif".replace("/", os.sep if "://" not in root else "/") in ids


# -- exists / size / info ---------------------------------------------------------------------


def test_exists_size_info(tree):
    uri = j(tree, "x", "a.tif")
    assert fileio.exists(uri)
    assert fileio.exists(j(tree, "x"))  # a directory / prefix
    assert not fileio.exists(j(tree, "x", "zzz.tif"))
    assert fileio.size(uri) == len(b"x/a.tif")
    meta = fileio.info(uri)
    assert meta["name"] == uri
    assert meta["type"] == "file"
    assert meta["size"] == len(b"x/a.tif")
    assert fileio.info(j(tree, "x"))["type"] == "directory"
    with pytest.raises(FileNotFoundError):
        fileio.info(j(tree, "x", "zzz.tif"))
    with pytest.raises(FileNotFoundError):
        fileio.size(j(tree, "x", "zzz.tif"))


def test_listing_sees_objects_written_behind_its_back(tree):
    """No stale listing cache: files created or deleted by someone else show up at once."""
    assert fileio.match(j(tree, "x", "*.tif")) == [j(tree, "x", "a.tif"), j(tree, "x", "b.tif")]
    assert not fileio.exists(j(tree, "x", "new.tif"))
    other_fs, path = fsspec.core.url_to_fs(j(tree, "x", "new.tif"), skip_instance_cache=True)
    other_fs.pipe_file(path, b"new")
    assert fileio.exists(j(tree, "x", "new.tif"))
    assert j(tree, "x", "new.tif") in fileio.match(j(tree, "x", "*.tif"))
    other_fs.rm_file(path)
    assert j(tree, "x", "new.tif") not in fileio.match(j(tree, "x", "*.tif"))


# -- open_file --------------------------------------------------------------------------------


def test_open_file_write_then_read(root, emu):
    uri = j(root, "new", "deeper", "blob.bin")  # parents do not exist yet
    payload = bytes(range(256)) * 64
    with fileio.open_file(uri, "wb") as f:
        f.write(payload[:1000])
        f.write(payload[1000:])
        assert not fileio.exists(uri)  # nothing visible before close
    assert read_back(uri, emu) == payload
    with fileio.open_file(uri, "rb") as f:
        assert f.read() == payload
    with fileio.open_file(uri) as f:  # ranged read
        f.seek(5000)
        assert f.read(10) == payload[5000:5010]


def test_open_file_text_mode(root, emu):
    uri = j(root, "notes.txt")
    with fileio.open_file(uri, "w") as f:
        f.write("héllo\nworld\n")
    assert read_back(uri, emu) == "héllo\nworld\n".encode()
    with fileio.open_file(uri, "r") as f:
        assert f.read().splitlines() == ["héllo", "world"]


def test_open_file_plain_close_publishes(root, emu):
    uri = j(root, "closed.bin")
    f = fileio.open_file(uri, "wb")
    f.write(b"abc")
    assert not f.closed
    f.close()
    assert f.closed
    assert read_back(uri, emu) == b"abc"


def test_open_file_failed_write_leaves_nothing(root, emu):
    uri = j(root, "out", "broken.bin")
    with pytest.raises(RuntimeError, match="boom"):
        with fileio.open_file(uri, "wb") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert not fileio.exists(uri)
    assert listing(root, emu) == []


def test_open_file_overwrites_and_x_mode(root, emu):
    uri = j(root, "o.bin")
    put(uri, b"old")
    with fileio.open_file(uri, "wb") as f:
        f.write(b"new")
    assert read_back(uri, emu) == b"new"
    with pytest.raises(FileExistsError):
        fileio.open_file(uri, "xb")


def test_open_file_missing_raises(root):
    with pytest.raises(FileNotFoundError):
        fileio.open_file(j(root, "nope.bin"), "rb")


# -- remove -----------------------------------------------------------------------------------


def test_remove_file_and_missing(tree, emu):
    fileio.remove(j(tree, "x", "a.tif"))
    assert not fileio.exists(j(tree, "x", "a.tif"))
    assert fileio.exists(j(tree, "x", "b.tif"))
    fileio.remove(j(tree, "x", "a.tif"))  # already gone: fine
    fileio.remove(j(tree, "never", "there"), recursive=True)


def test_remove_recursive_prefix(tree, emu):
    with pytest.raises(IsADirectoryError):
        fileio.remove(j(tree, "x"))
    assert fileio.exists(j(tree, "x", "a.tif"))
    fileio.remove(j(tree, "x"), recursive=True)
    assert fileio.match(j(tree, "x")) == []
    assert not fileio.exists(j(tree, "x", "sub", "deep", "e.tif"))
    # The sibling prefix "xy" and top-level files survive.
    assert listing(tree, emu) == ["top.tif", os.path.join("xy", "f.tif") if emu is None else "xy/f.tif"]


def test_remove_bucket_root_empties_it_but_keeps_the_bucket(gcs_bucket, gcs_emulator):
    put(j(gcs_bucket, "a", "b.bin"), b"1")
    put(j(gcs_bucket, "c.bin"), b"2")
    fileio.remove(gcs_bucket, recursive=True)
    assert gcs_emulator.object_names(gcs_bucket[len("gs://"):]) == []
    put(j(gcs_bucket, "again.bin"), b"3")  # bucket still there
    assert fileio.match(gcs_bucket) == [j(gcs_bucket, "again.bin")]


# -- open_raster ------------------------------------------------------------------------------


TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4100000.0)  # 0.5 m pixels, north up


def _write_geotiff(path: str, height: int = 1024, width: int = 768) -> np.ndarray:
    import rasterio

    rng = np.random.default_rng(7)
    data = rng.integers(0, 65535, size=(3, height, width), dtype=np.uint16)
    profile = dict(
        driver="GTiff", width=width, height=height, count=3, dtype="uint16",
        crs="EPSG:32633", transform=TRANSFORM,
        tiled=True, blockxsize=128, blockysize=128, compress="none", interleave="pixel",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def test_open_raster_windowed_read_matches_original(root, tmp_path, emu):
    import rasterio
    from rasterio.windows import Window

    original = str(tmp_path / "orig.tif")
    data = _write_geotiff(original)
    uri = j(root, "rasters", "scene.tif")
    with open(original, "rb") as f:
        put(uri, f.read())

    window = Window(col_off=300, row_off=450, width=200, height=150)
    if emu is not None:
        emu.clear_requests()
    with fileio.open_raster(uri) as ds:
        assert (ds.count, ds.height, ds.width) == (3, 1024, 768)
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == TRANSFORM
        got = ds.read(window=window)
        band2 = ds.read(2, window=Window(0, 0, 5, 5))
    expected = data[:, 450:600, 300:500]
    assert np.array_equal(got, expected)
    assert np.array_equal(band2, data[1, :5, :5])
    with rasterio.open(original) as ref:  # and the same as reading the local original
        assert np.array_equal(ref.read(window=window), got)

    if emu is not None:
        # Range reads only: every download asked for a byte range, and far less than the
        # object came over the wire (the window touches 6 of 48 tiles).
        requests = emu.requests
        downloads = [r for r in requests if "alt=media" in r[1]]
        # No sidecar probing (.aux.xml, .msk, ...): just the object's metadata, then ranges.
        assert len(requests) - len(downloads) <= 4, requests
        assert downloads and all(r[2] and r[2].startswith("bytes=") for r in downloads)
        object_size = os.path.getsize(original)
        fetched = sum(r[3] for r in downloads)
        assert fetched < object_size / 3, (fetched, object_size, requests)


def test_open_raster_same_uri_twice(root, tmp_path):
    from rasterio.windows import Window

    original = str(tmp_path / "orig.tif")
    data = _write_geotiff(original, 256, 256)
    uri = j(root, "twice.tif")
    with open(original, "rb") as f:
        put(uri, f.read())
    # Twice at a time, more than once: fsspec read handles on one object compare equal, and
    # rasterio's handle registry used to mix them up (closing failed from the second round on).
    for _ in range(3):
        with fileio.open_raster(uri) as a, fileio.open_raster(uri) as b:
            assert np.array_equal(a.read(1, window=Window(0, 0, 8, 8)), data[0, :8, :8])
            assert np.array_equal(b.read(3, window=Window(100, 100, 8, 8)), data[2, 100:108, 100:108])
        with fileio.open_raster(uri) as c:
            assert np.array_equal(c.read(2, window=Window(7, 9, 3, 3)), data[1, 9:12, 7:10])


def test_open_raster_missing_raises_oserror(root):
    with pytest.raises(OSError):
        fileio.open_raster(j(root, "missing.tif"))


# -- check_writable ---------------------------------------------------------------------------


def test_check_writable_ok_and_leaves_nothing(root, emu):
    out = j(root, "outputs")
    fileio.check_writable(out)
    assert listing(root, emu) == []


def test_check_writable_local_failure(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    with pytest.raises(OSError, match="not writable"):
        fileio.check_writable(str(blocker / "sub"))


def test_check_writable_missing_bucket(gcs_emulator):
    with pytest.raises(OSError, match="not writable"):
        fileio.check_writable("gs://no-such-bucket-tileseg/out")


# -- publish ----------------------------------------------------------------------------------


def test_publish_moves_complete_file(root, tmp_path, emu):
    local = tmp_path / "scratch" / "tile.png"
    local.parent.mkdir()
    payload = os.urandom(300_000)
    local.write_bytes(payload)
    uri = j(root, "out", "nested", "tile.png")
    assert not fileio.exists(uri)
    fileio.publish(str(local), uri)
    assert read_back(uri, emu) == payload
    assert fileio.exists(uri) and fileio.size(uri) == len(payload)
    assert not local.exists()  # the local temp is gone
    assert listing(root, emu) == [os.path.join("out", "nested", "tile.png") if emu is None
                                  else "out/nested/tile.png"]  # no .tmp left behind


def test_publish_replaces_existing(root, tmp_path, emu):
    uri = j(root, "tile.bin")
    put(uri, b"old contents")
    local = tmp_path / "new.bin"
    local.write_bytes(b"new")
    fileio.publish(str(local), uri)
    assert read_back(uri, emu) == b"new"
    assert listing(root, emu) == ["tile.bin"]


def test_publish_local_is_one_rename_of_a_complete_file(tmp_path, monkeypatch):
    """The destination never holds a partial file: a hidden complete temp is renamed over it."""
    out = tmp_path / "out"
    dest = out / "tile.bin"
    local = tmp_path / "scratch.bin"
    payload = os.urandom(100_000)
    local.write_bytes(payload)
    seen = []
    real_replace = os.replace

    def spy_replace(src, dst):
        src, dst = str(src), str(dst)
        seen.append((src, dst))
        assert os.path.dirname(src) == str(out)  # same directory: rename is atomic
        assert os.path.basename(src).startswith(".tile.bin.") and src.endswith(".tmp")
        assert not os.path.exists(dst)  # nothing published yet
        with open(src, "rb") as f:
            assert f.read() == payload  # already complete when renamed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    fileio.publish(str(local), str(dest))
    assert len(seen) == 1 and seen[0][1] == str(dest)
    assert dest.read_bytes() == payload
    assert sorted(os.listdir(out)) == ["tile.bin"]
    assert not local.exists()


def test_publish_local_failure_restores_source_and_leaves_no_tmp(tmp_path):
    out = tmp_path / "out"
    (out / "tile.bin").mkdir(parents=True)  # a directory where the file should go
    local = tmp_path / "scratch.bin"
    local.write_bytes(b"precious")
    with pytest.raises(OSError):
        fileio.publish(str(local), str(out / "tile.bin"))
    assert local.read_bytes() == b"precious"
    assert os.listdir(out) == ["tile.bin"]


def test_publish_remote_object_appears_only_after(gcs_bucket, gcs_emulator, tmp_path):
    bucket = gcs_bucket[len("gs://"):]
    local = tmp_path / "part.bin"
    local.write_bytes(b"x" * 10_000)
    uri = j(gcs_bucket, "results", "part.bin")
    assert gcs_emulator.object_names(bucket) == []
    fileio.publish(str(local), uri)
    assert gcs_emulator.object_names(bucket) == ["results/part.bin"]
    assert gcs_emulator.object_bytes(bucket, "results/part.bin") == b"x" * 10_000
    assert not local.exists()


# -- the emulator itself ----------------------------------------------------------------------


def test_gcs_traffic_goes_to_the_emulator(gcs_bucket, gcs_emulator):
    fs, _ = fileio.filesystem(gcs_bucket + "/x")
    assert fs._location == gcs_emulator.endpoint
    assert fs._location.startswith("http://127.0.0.1:")
    assert fs.credentials.credentials is None  # anonymous: no Google credential lookups
    gcs_emulator.clear_requests()
    put(j(gcs_bucket, "ping"), b"pong")
    assert fileio.exists(j(gcs_bucket, "ping"))
    assert gcs_emulator.requests  # served by the emulator


def test_relative_to_names_a_path_under_a_folder_or_none(tmp_path, monkeypatch) -> None:
    root = tmp_path / "out"
    assert fileio.relative_to(str(root / "stats" / "r.parquet"), str(root)) == "stats/r.parquet"
    assert fileio.relative_to(str(root / "a" / "b.json"), str(root) + "/") == "a/b.json"
    assert fileio.relative_to(str(tmp_path / "outside.tif"), str(root)) is None
    assert fileio.relative_to(str(tmp_path / "out2" / "x"), str(root)) is None  # a sibling sharing a prefix
    monkeypatch.chdir(tmp_path)
    assert fileio.relative_to(str(root / "masks" / "t.tif"), "out") == "masks/t.tif"  # a relative root
    assert fileio.relative_to("gs://b/out/masks/t.tif", "gs://b/out") == "masks/t.tif"
    assert fileio.relative_to("gs://b/other/t.tif", "gs://b/out") is None
