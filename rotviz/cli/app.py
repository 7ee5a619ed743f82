"""Command ``app`` for ``python -m rotviz``: start the Streamlit app from any folder.

Streamlit reads ``.streamlit/config.toml`` from the working folder only, so the launcher reads
the app's own settings from the copy that ships with the package and hands them to Streamlit
as environment variables (``STREAMLIT_SERVER_ADDRESS``...). Options given on the command line
(``rotviz app --server.port 8600``) or already set in the environment win. Streamlit runs as
its own process: the command line never imports it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from rotviz.config import bundled
from rotviz.errors import RotvizError

# The router module; its file is Streamlit's main script (found, not imported: the command
# line does not depend on the app's code).
ROUTER_MODULE = "rotviz.app.navigation"


def router_script() -> Path:
    """The file Streamlit runs: the app's router (rotviz/app/navigation.py)."""
    spec = importlib.util.find_spec(ROUTER_MODULE)
    if spec is None or spec.origin is None:
        raise RotvizError(f"the app's router {ROUTER_MODULE} is not installed")
    return Path(spec.origin)


def env_name(option: str) -> str:
    """Streamlit's environment variable for a config option: server.maxUploadSize ->
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE (the rule of streamlit.config_option)."""
    name = option.replace(".", "_")
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return "STREAMLIT_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).upper()


def app_settings(config: Path | None = None) -> dict[str, str]:
    """The app's settings (the bundled .streamlit/config.toml) as Streamlit environment variables."""
    path = config or bundled(".streamlit") / "config.toml"
    try:
        sections = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RotvizError(f"cannot read the app's settings {path}: {err}") from None
    settings = {}
    for section, options in sections.items():
        for key, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            settings[env_name(f"{section}.{key}")] = text
    return settings


def app_command(streamlit_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(command line, environment) that start Streamlit on the router with the app's settings;
    the user's options and environment variables take precedence over the bundled settings."""
    env = {**app_settings(), **os.environ}
    cmd = [sys.executable, "-m", "streamlit", "run", str(router_script()), *streamlit_args]
    return cmd, env


def cmd_app(args: argparse.Namespace) -> int:
    cmd, env = app_command(args.streamlit_args)
    if os.name == "posix":  # become Streamlit: Ctrl-C and kill reach it directly
        os.execve(sys.executable, cmd, env)
    return subprocess.call(cmd, env=env)


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``app``: every further argument goes to ``streamlit run`` unchanged."""
    p = sub.add_parser(
        "app",
        help="start the app in the browser (further options go to streamlit run, "
        "e.g. --server.port 8600; --help lists them)",
        prefix_chars="+",  # so --server.port ... are arguments, not rotviz options
        add_help=False,
    )
    p.add_argument("streamlit_args", nargs="*", help="options for streamlit run")
    p.set_defaults(func=cmd_app)
