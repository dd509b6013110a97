"""The wheel carries the Hydra configs (the top-level conf/ mapped to rsdet/conf), and an installed
rsdet — no source tree on the path — runs `rsdet train --help`, a short training run and
`rsdet report` from an unrelated folder."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "rsdet", "conf")


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", **extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (setuptools builds in place: keep the checkout clean)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dist), str(src)],
        capture_output=True, text=True, env=_clean_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = dist.glob("rsdet-*.whl")
    return built


def test_wheel_ships_every_config_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"rsdet/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)
    packages = {f"{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "rsdet").rglob("__init__.py")}
    assert packages <= names, sorted(packages - names)
    assert "rsdet/engine/__init__.py" in names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rsdet").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every module sits in a package that is found
    assert "rsdet/report/paper_values.json" in names  # the supplementary's numbers (rsdet.report.paper)
    assert not any(n.startswith(("conf/", "tests/")) for n in names)  # nothing at the top level but rsdet


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; torch & co. come from this interpreter's site-packages
    through a .pth line (nothing is downloaded or reinstalled)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Only the dependencies' folder; its .pth files (e.g. an editable rsdet) are not processed.
    Path(purelib, "_rsdet_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)],
        capture_output=True, text=True, env=_clean_env(), timeout=300,
    )
    if proc.returncode != 0 and "no such option: --python" in proc.stderr:
        pytest.skip(f"this pip cannot install into another interpreter: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env_dir


def _rsdet(env_dir: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    exe = env_dir / ("Scripts/rsdet.exe" if os.name == "nt" else "bin/rsdet")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env=_clean_env(**env), timeout=300)


def test_installed_rsdet_uses_its_own_code_and_configs(installed, tmp_path):
    python = installed / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import rsdet, rsdet.paths as p; print(rsdet.__file__); "
                            "print(p.conf_dir())"], cwd=tmp_path, capture_output=True, text=True,
                           env=_clean_env(), check=True).stdout.split()
    assert all(Path(w).is_relative_to(installed) for w in where), where
    proc = _rsdet(installed, "train", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== Config groups" in proc.stdout and "loss: " in proc.stdout and "schedule: " in proc.stdout


@pytest.mark.slow
def test_installed_rsdet_trains_and_reports_from_another_folder(installed, tiny_run, tmp_path):
    # tiny_run: the shared tiny-dataset overrides; RSDET_CACHE is set in os.environ for the child
    proc = _rsdet(installed, "train", *tiny_run, "eval.max_images=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (metrics,) = tmp_path.glob("outputs/runs/*/*/metrics.json")
    assert "bbox" in metrics.read_text()
    report = _rsdet(installed, "report", "outputs", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "AP" in report.stdout
