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


SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def package_folder(package: str) -> Path:
    """Where a listed package's files are in the checkout (pyproject's package-dir mapping)."""
    mapped = SETUPTOOLS.get("package-dir", {}).get(package)
    return REPO / mapped if mapped else REPO / package.replace(".", "/")


def test_console_script_and_package_data_are_declared():
    target = PYPROJECT["project"]["scripts"]["rotviz"]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    # every subpackage of the source tree is listed
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "rotviz").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= set(SETUPTOOLS["packages"]), found - set(SETUPTOOLS["packages"])
    # every data file of every package (not Python, not a cache, not a subpackage's) is covered
    missed = []
    for package in SETUPTOOLS["packages"]:
        folder = package_folder(package)
        patterns = SETUPTOOLS["package-data"].get(package, [])
        for p in folder.rglob("*"):
            sub = p.relative_to(folder)
            in_subpackage = any((folder / d / "__init__.py").is_file() for d in sub.parts[:-1])
            if not p.is_file() or p.suffix in (".py", ".pyc") or in_subpackage:
                continue
            if "__pycache__" in sub.parts:
                continue
            if not any(fnmatch.fnmatch(sub.as_posix(), pat) for pat in patterns):
                missed.append(f"{package}: {sub}")
    assert "demo_annotations.json" in SETUPTOOLS["package-data"]["rotviz.data"]
    assert missed == [], f"add these to [tool.setuptools.package-data] in pyproject.toml: {missed}"


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
        expected = [
            "data/demo_annotations.json",
            "checkpoints/standin.safetensors",
            "checkpoints/standin.json",
            "checkpoints/STANDIN.md",
            "checkpoints/train_shipped.sh",
            "pages/saliency.py",
            "streamlit/config.toml",
            *(f"app/static/{p.name}" for p in (src / "rotviz" / "app" / "static").glob("*")),
        ]
        assert [n for n in expected if not (installed / n).is_file()] == []
