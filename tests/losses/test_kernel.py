"""Kernel selection (rsdet.losses._kernel): RSDET_LOSS_KERNEL, the fallback without numba, and
numba's cache folder when neither the package nor ~/.cache is writable."""

import os
import stat

import pytest
import torch

from rsdet.errors import ConfigError
from rsdet.losses import _kernel, rank_sort_loss

kernels = pytest.importorskip("rsdet.losses._numba_kernels", reason="numba is not installed")


def test_selection(monkeypatch):
    cpu = torch.zeros(3)
    monkeypatch.setenv(_kernel.ENV, "torch")
    assert _kernel.numba_kernels(cpu) is None
    monkeypatch.setenv(_kernel.ENV, "auto")
    assert _kernel.numba_kernels(cpu) is kernels
    assert _kernel.numba_kernels(torch.zeros(3, device="meta")) is None   # off the CPU: torch
    monkeypatch.setenv(_kernel.ENV, "fast")
    with pytest.raises(ConfigError, match="RSDET_LOSS_KERNEL='fast'"):
        _kernel.numba_kernels(cpu)


def test_without_numba_auto_falls_back_and_numba_raises(monkeypatch):
    """numba not importable: auto runs the torch code (same result), numba is a clear error."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, generator=g)
    t = torch.zeros(5000)
    t[:600] = torch.rand(600, generator=g) + 0.01
    monkeypatch.setenv(_kernel.ENV, "auto")
    xn = x.clone().requires_grad_()
    rn, sn = rank_sort_loss(xn, t)
    (rn + sn).backward()
    monkeypatch.setattr(_kernel, "_module", None)
    monkeypatch.setattr(_kernel, "_import_error", "ModuleNotFoundError: No module named 'numba'")
    assert _kernel.numba_kernels(x) is None
    xt = x.clone().requires_grad_()
    rt, st = rank_sort_loss(xt, t)
    (rt + st).backward()
    assert abs(rt.item() - rn.item()) <= 1e-6 and abs(st.item() - sn.item()) <= 1e-6
    assert torch.allclose(xt.grad, xn.grad, rtol=1e-4, atol=1e-8)
    monkeypatch.setenv(_kernel.ENV, "numba")
    with pytest.raises(ConfigError, match="pip install"):
        rank_sort_loss(x, t)


def test_unwritable_cache_retries_in_private_dir(monkeypatch, tmp_path):
    """numba refuses cached functions when no cache folder is writable ("cannot cache ..."):
    the import is retried with numba's cache in the private fallback folder; other errors
    propagate."""
    import numba

    calls = []

    def fake_import(name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("cannot cache function 'bin_block': no locator available")
        return kernels

    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(_kernel.importlib, "import_module", fake_import)
    monkeypatch.setattr(_kernel.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert _kernel._import_kernels() is kernels
    assert calls == ["rsdet.losses._numba_kernels"] * 2
    assert numba.config.CACHE_DIR == str(tmp_path / f"rsdet-numba-cache-{os.getuid()}")

    def broken(name):
        raise RuntimeError("something else")

    monkeypatch.setattr(_kernel.importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="something else"):
        _kernel._import_kernels()


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_fallback_cache_dir_is_private(monkeypatch, tmp_path):
    """Created 0700 (whatever the umask) and owned by the user; a folder of that name that is
    not private (group/other access, a link, another owner — another user may create it
    first in a shared temp folder) is never used: a fresh random 0700 folder instead, with a
    warning naming the fix.  $XDG_RUNTIME_DIR is preferred when it is the user's own."""
    monkeypatch.setattr(_kernel.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    expected = tmp_path / f"rsdet-numba-cache-{os.getuid()}"
    old_umask = os.umask(0o022)
    try:
        assert _kernel.fallback_cache_dir() == str(expected)
    finally:
        os.umask(old_umask)
    assert _mode(expected) == 0o700 and os.lstat(expected).st_uid == os.getuid()
    assert _kernel.fallback_cache_dir() == str(expected)          # reused when private

    def refused():
        with pytest.warns(RuntimeWarning, match="not a private folder.*NUMBA_CACHE_DIR"):
            path = _kernel.fallback_cache_dir()
        assert path != str(expected) and path.startswith(str(tmp_path))
        assert _mode(path) == 0o700 and os.lstat(path).st_uid == os.getuid()
        return path

    os.chmod(expected, 0o777)                                      # open to everyone
    refused()
    os.rmdir(expected)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, expected)                                   # a link planted there
    refused()
    os.remove(expected)
    expected.mkdir(mode=0o700)
    # Another owner: pretend to be uid + 1, whose folder name we (uid) have created first.
    uid = os.getuid()
    squatted = tmp_path / f"rsdet-numba-cache-{uid + 1}"
    squatted.mkdir(mode=0o700)
    monkeypatch.setattr(_kernel.os, "getuid", lambda: uid + 1)
    with pytest.warns(RuntimeWarning, match="not a private folder"):
        assert _kernel.fallback_cache_dir() != str(squatted)
    monkeypatch.setattr(_kernel.os, "getuid", lambda: uid)

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert _kernel.fallback_cache_dir() == str(runtime / "rsdet-numba-cache")
    assert _mode(runtime / "rsdet-numba-cache") == 0o700
    os.chmod(runtime, 0o755)                                       # not private: not used
    assert _kernel.fallback_cache_dir() == str(expected)
