"""The persistent XLA compile cache (model/loading.use_compile_cache): a second process finds the
first one's compiled program on disk and computes the same labels; the cache can be turned off,
and a user's own TF_XLA_FLAGS setting or an unusable folder is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model import loading
from model.loading import has_gpu
from tests.models import binning_labels, write_binning_model

REPO = Path(__file__).resolve().parent.parent

# One process = one reading of TF_XLA_FLAGS, so each case runs in a fresh interpreter.
_PREDICT = """
import sys
import numpy as np
from model.predictor import Predictor
p = Predictor.from_dir(sys.argv[1], "float32")
x = (np.arange(2 * 64 * 64 * 3) % 251).astype(np.uint8).reshape(2, 64, 64, 3)
np.save(sys.argv[2], p.predict_labels(x, 2, 255.0))
"""


def _predict(model: Path, out: Path, cache: str) -> np.ndarray:
    env = {**os.environ, "TILESEG_XLA_CACHE": cache, "TF_XLA_FLAGS": ""}
    subprocess.run([sys.executable, "-c", _PREDICT, str(model), str(out)], cwd=REPO, env=env, check=True,
                   capture_output=True, text=True)
    return np.load(out)


@pytest.mark.skipif(has_gpu(), reason="XLA is used for float32 on a CPU only")
def test_second_process_reuses_the_compiled_program(tmp_path: Path) -> None:
    model = tmp_path / "model"
    write_binning_model(str(model), num_classes=5)
    cache = tmp_path / "xla"
    first = _predict(model, tmp_path / "a.npy", str(cache))
    entries = sorted(p.name for p in cache.iterdir())
    assert entries and all(n.startswith("xla_compile_cache__") and n.endswith(".pb") for n in entries)
    stamps = {n: (cache / n).stat().st_mtime_ns for n in entries}
    second = _predict(model, tmp_path / "b.npy", str(cache))
    # The second process compiled nothing new: same files, untouched, and the same labels.
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    x = (np.arange(2 * 64 * 64 * 3) % 251).astype(np.uint8).reshape(2, 64, 64, 3)
    expected = np.stack([binning_labels(im, 5, 255.0) for im in x])
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    # Turned off (TILESEG_XLA_CACHE empty): nothing written anywhere we can see, same labels.
    off = _predict(model, tmp_path / "c.npy", "")
    np.testing.assert_array_equal(off, expected)
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_cache_folder_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loading.XLA_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loading.xla_cache_dir() == str(tmp_path / "xdg" / "tileseg" / "xla")
    monkeypatch.setenv(loading.XLA_CACHE_ENV, "")
    assert loading.xla_cache_dir() is None
    monkeypatch.setenv(loading.XLA_CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    loading.use_compile_cache()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 --tf_xla_persistent_cache_directory={tmp_path / 'mine'}"
    assert (tmp_path / "mine").is_dir()
    # The user's own cache setting wins; so does "no cache".
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=/elsewhere")
    loading.use_compile_cache()
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_persistent_cache_directory=/elsewhere"
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv(loading.XLA_CACHE_ENV, "")
    loading.use_compile_cache()
    assert os.environ["TF_XLA_FLAGS"] == ""
    # A folder TensorFlow's flag parser would split, or one that cannot be made: no cache, no error.
    monkeypatch.setenv(loading.XLA_CACHE_ENV, str(tmp_path / "with space"))
    loading.use_compile_cache()
    assert os.environ["TF_XLA_FLAGS"] == "" and not (tmp_path / "with space").exists()
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(loading.XLA_CACHE_ENV, str(tmp_path / "file" / "sub"))
    loading.use_compile_cache()
    assert os.environ["TF_XLA_FLAGS"] == ""
