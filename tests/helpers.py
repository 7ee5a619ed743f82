"""Helpers the tests import (fixtures live in conftest.py): where the optional real data is, and
a fresh venv with rotviz installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (real data lives beside the repo, not in it)")
    return path


REPO = Path(__file__).resolve().parents[1]


def source_copy(dest: Path) -> Path:
    """The files a `pip install .` reads, copied (the build writes build/ and *.egg-info there),
    plus one stand-in for each kind of shipped file so the test sees them travel."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    for folder in ("rotviz", "pages", ".streamlit"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shipped = dest / "checkpoints"
    shipped.mkdir()
    for name in ("standin.safetensors", "standin.json", "STANDIN.md", "train_shipped.sh"):
        (shipped / name).write_text("stand-in")
    return dest


def clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH / PYTHONHOME (an installed rotviz must stand alone)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run_ok(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output unless it exits 0."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done


def installed_venv(tmp_path: Path, editable: bool = False) -> tuple[Path, Path]:
    """(venv, source copy): a fresh venv with rotviz pip-installed from a copy of this checkout.

    Without its dependencies (no network, no gigabytes): they are made visible from this
    interpreter's site-packages by a .pth file in the new venv. No pip or setuptools of its own:
    this interpreter's pip installs into it, and the build uses this interpreter's setuptools.
    """
    src = source_copy(tmp_path / "src")
    venv, env = tmp_path / "venv", clean_env()
    run_ok([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = run_ok(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env
    )
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib.stdout.strip(), "_rotviz_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    pip.append("--no-build-isolation")
    run_ok([*pip, *(["-e"] if editable else []), str(src)], tmp_path, env)
    return venv, src
