"""The package installs: `pip install .` and `pip install -e .`, `rotviz` and `python -m rotviz` from any folder;
`rotviz app` starts Streamlit on the packaged router with the app's own settings.

The slow test builds a fresh venv and installs rotviz without its dependencies (no network,
no gigabytes; tests.helpers.installed_venv). The browser test that `rotviz app` serves the
home page from another folder is in test_browser.py.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from rotviz.cli.app import app_command, app_settings, env_name, router_script
from rotviz.cli.main import build_parser
from tests.helpers import clean_env, installed_venv, run_ok

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


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_installed_rotviz_runs_from_any_folder(tmp_path, editable):
    venv, src = installed_venv(tmp_path, editable)
    python, env = venv / "bin" / "python", clean_env()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cmd in ([venv / "bin" / "rotviz", "--help"], [python, "-m", "rotviz", "--help"]):
        out = run_ok(cmd, elsewhere, env).stdout
        assert "train" in out and "saliency" in out and "app" in out, out
    where = run_ok(
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
            "pages/home.py",
            "pages/saliency.py",
            "app/navigation.py",
            "streamlit/config.toml",
            *(f"app/static/{p.name}" for p in (src / "rotviz" / "app" / "static").glob("*")),
        ]
        assert [n for n in expected if not (installed / n).is_file()] == []


def test_app_command_passes_the_app_settings_and_the_user_options_win(monkeypatch):
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "5")  # the user's own choice
    args = build_parser().parse_args(["app", "--server.port", "8600", "--theme.base=dark"])
    cmd, env = app_command(args.streamlit_args)
    assert cmd == [
        sys.executable, "-m", "streamlit", "run", str(router_script()),
        "--server.port", "8600", "--theme.base=dark",
    ]  # fmt: skip
    assert router_script() == REPO / "rotviz" / "app" / "navigation.py"
    # .streamlit/config.toml, wherever the app starts: this machine only, no usage statistics
    assert env["STREAMLIT_SERVER_ADDRESS"] == "localhost"
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert env["STREAMLIT_SERVER_HEADLESS"] == "true"
    assert env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == "5"  # not the bundled 20
    assert app_settings()["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == "20"
    assert "STREAMLIT_CLIENT_SHOW_SIDEBAR_NAVIGATION" not in env  # st.navigation's sidebar shows


def test_app_settings_use_streamlit_own_option_names():
    pytest.importorskip("streamlit")
    from streamlit import config

    options = config._config_options_template
    assert all(env_name(key) == option.env_var for key, option in options.items())
    assert set(app_settings()) <= {option.env_var for option in options.values()}
