"""The package installs: `pip install .` and `pip install -e .`, `rotviz` and `python -m rotviz` from any folder.

The slow test builds a fresh venv and installs rotviz without its dependencies (no network,
no gigabytes); the dependencies are made visible from this interpreter's site-packages by a
.pth file in the new venv.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def package_data_patterns() -> list[str]:
    return PYPROJECT["tool"]["setuptools"]["package-data"]["rotviz"]


def test_console_script_and_package_data_are_declared():
    target = PYPROJECT["project"]["scripts"]["rotviz"]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    # every data file of the package (not Python, not a cache) is covered by a pattern
    data = [
        p.relative_to(REPO / "rotviz").as_posix()
        for p in (REPO / "rotviz").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "demo_annotations.json" in data
    missed = [
        f for f in data if not any(fnmatch.fnmatch(f, pat) for pat in package_data_patterns())
    ]
    assert missed == [], f"add these to [tool.setuptools.package-data] in pyproject.toml: {missed}"


def source_copy(dest: Path) -> Path:
    """The files a `pip install .` reads, copied (the build writes build/ and *.egg-info there),
    plus one stand-in for each kind of shipped file so the test sees them travel."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "rotviz", dest / "rotviz", ignore=shutil.ignore_patterns("__pycache__"))
    shipped = dest / "rotviz" / "shipped"
    shipped.mkdir(exist_ok=True)
    for name in ("standin.safetensors", "standin.json", "STANDIN.md"):
        (shipped / name).write_text("stand-in")
    return dest


def run(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_installed_rotviz_runs_from_any_folder(tmp_path, editable):
    src = source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # no pip or setuptools of its own: this interpreter's pip installs into it, and the build
    # uses this interpreter's setuptools (through the .pth), so nothing is downloaded
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env
    )
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib.stdout.strip(), "_rotviz_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    pip.append("--no-build-isolation")
    run([*pip, *(["-e"] if editable else []), str(src)], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cmd in ([venv / "bin" / "rotviz", "--help"], [python, "-m", "rotviz", "--help"]):
        out = run(cmd, elsewhere, env).stdout
        assert "train" in out and "saliency" in out, out
    where = run(
        [python, "-c", "import pathlib, rotviz; print(pathlib.Path(rotviz.__file__).parent)"],
        elsewhere,
        env,
    ).stdout.strip()
    installed = Path(where)
    if editable:
        assert installed == src / "rotviz"
    else:
        assert venv in installed.parents  # the copy in site-packages, not the source
        for name in ("demo_annotations.json", "shipped/standin.safetensors"):
            assert (installed / name).is_file(), name
        for name in ("shipped/standin.json", "shipped/STANDIN.md"):
            assert (installed / name).is_file(), name
        static = [
            p.relative_to(src / "rotviz") for p in (src / "rotviz" / "ui" / "static").glob("*")
        ]
        assert all((installed / p).is_file() for p in static), static
