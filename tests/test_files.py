"""Files the package writes (models, recommendation outputs, metrics) get a normal file's permissions."""

import os
import stat

import pytest

from sansa_gpu import SANSA, score_to_parquet
from sansa_gpu.cli import main


@pytest.fixture(params=[(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def umask(request):
    """Run the test under a known umask; yields the mode a new file must get (0o666 & ~umask)."""
    mask, expected = request.param
    old = os.umask(mask)
    try:
        yield expected
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def fitted(small_X):
    return SANSA(l2=10.0, density=0.1, device="cpu").fit(small_X)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_model_file_has_normal_permissions(fitted, tmp_path, umask):
    fitted.save(tmp_path / "m.npz")
    assert oct(mode(tmp_path / "m.npz")) == oct(umask)
    (tmp_path / "m.npz").chmod(0o400)  # replacing a file gives the new file the umask's mode as well
    fitted.save(tmp_path / "m.npz")
    assert oct(mode(tmp_path / "m.npz")) == oct(umask)


@pytest.mark.parametrize("name", ["top.parquet", "top.csv"])
def test_recommendation_output_has_normal_permissions(fitted, small_X, tmp_path, umask, name):
    score_to_parquet(fitted, small_X, tmp_path / name, k=5, batch_size=150, progress=False)
    assert oct(mode(tmp_path / name)) == oct(umask)


def test_cli_metrics_file_has_normal_permissions(fitted, small_X, tmp_path, umask, capsys):
    d = tmp_path / "split"
    d.mkdir()
    for name, rows in (("train.txt", range(0, 400)), ("test.txt", range(0, 400, 2))):
        lines = [" ".join(map(str, [u, *small_X[u].indices[: 8 if name == "train.txt" else None]])) for u in rows]
        (d / name).write_text("\n".join(lines) + "\n")
    fitted.save(tmp_path / "m.npz")
    assert main(["evaluate", str(tmp_path / "m.npz"), "--split", str(d), "-o", str(tmp_path / "metrics.json"), "-q"]) == 0
    assert (tmp_path / "metrics.json").read_text() == capsys.readouterr().out
    assert oct(mode(tmp_path / "metrics.json")) == oct(umask)
