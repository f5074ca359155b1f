"""Install into this environment with uv, from the places pip is configured to install from.

``make install`` used pip, which unpacks and byte-compiles on one core: 3.6 to 3.9 of the 12 minutes of a fresh
``make test`` on 2 cores went to unpacking the 5.5 GB CUDA build of torch.  uv unpacks and compiles on every core and
keeps the unpacked wheels in its cache (``UV_CACHE_DIR``, default ``~/.cache/uv``), from which a later install
hard-links them.

uv does not read pip's configuration, and a machine whose wheels come from a local mirror has it there (this
project's machines: ``find-links`` and two ``extra-index-url`` folders, and a ``constraint`` file).  So this script
reads ``python -m pip config list`` (files and ``PIP_*`` variables) and passes the same settings to ``uv pip
install``:

==================  =========================================================================================
pip setting         uv argument
==================  =========================================================================================
``index-url``       ``--index-url``
``extra-index-url`` ``--extra-index-url`` (each), and ``--index-strategy unsafe-best-match``: pip takes the best
                    version over all indexes, uv by default only looks at the first index that has the package
``find-links``      ``--find-links`` (each)
``no-index``        ``--no-index``
``constraint``      ``-c`` (each)
``trusted-host``    ``--allow-insecure-host`` (each)
``cert``            the environment variable ``SSL_CERT_FILE`` (unless set)
``timeout``         the environment variable ``UV_HTTP_TIMEOUT`` (unless set); pip's ``default-timeout`` too
==================  =========================================================================================

Every other setting (``disable-pip-version-check``, ...) has no effect on what is installed and is ignored.
Usage: ``python tools/uv_install.py [uv pip install arguments]``, with the environment's Python; the arguments go to
``uv pip install --python <that Python>`` after the translated ones.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Configuration sections in increasing precedence (``pip config list`` prints each key once per section).
SECTIONS = ("global", "install", ":env:")


def read_pip_config(text: str) -> dict[str, str]:
    """The settings of ``pip config list``'s output ``text`` (``section.key='value'`` lines), with the most
    specific section winning (``PIP_*`` variables over ``install`` over ``global``)."""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        name, value = line.split("=", 1)
        section, _, key = name.rpartition(".")
        if section not in SECTIONS:
            continue
        found.setdefault(key, {})[section] = ast.literal_eval(value)
    return {key: next(by[s] for s in reversed(SECTIONS) if s in by) for key, by in found.items()}


def uv_arguments(config: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """``uv pip install`` arguments, and environment variables, that install from where pip's ``config`` says."""
    args: list[str] = []
    env: dict[str, str] = {}
    if "index-url" in config:
        args += ["--index-url", config["index-url"]]
    extra = config.get("extra-index-url", "").split()
    for url in extra:
        args += ["--extra-index-url", url]
    for place in config.get("find-links", "").split():
        args += ["--find-links", place]
    if extra or config.get("find-links"):
        args += ["--index-strategy", "unsafe-best-match"]
    if config.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    for path in config.get("constraint", "").split():
        args += ["-c", path]
    for host in config.get("trusted-host", "").split():
        args += ["--allow-insecure-host", host]
    if "cert" in config:
        env["SSL_CERT_FILE"] = config["cert"]
    timeout = config.get("timeout", config.get("default-timeout"))
    if timeout is not None:
        env["UV_HTTP_TIMEOUT"] = timeout
    return args, env


def main(argv: list[str]) -> int:
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        uv = shutil.which("uv")
        if uv is None:
            sys.exit(f"uv_install: no uv beside {sys.executable} nor on PATH (make install installs it first)")
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True, capture_output=True,
                             text=True).stdout
    args, env = uv_arguments(read_pip_config(listing))
    env = {**env, **os.environ}
    command = [str(uv), "pip", "install", "--python", sys.executable, *args, *argv]
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
