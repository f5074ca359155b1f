"""``make install``'s uv step installs from where pip is configured to install from (``tools/uv_install.py``).

The translation is checked on a listing like this project's machines print (a local wheel folder, two local
indexes, a constraint file, a certificate) and on precedence; the Makefile is checked to install its pinned uv and
to install every requirements file through the script, so a machine whose wheels come from a mirror keeps getting
them from there.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import uv_install  # noqa: E402

LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/somewhere/else.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/other-wheels'
install.find-links='/opt/install-wheels'
"""


def test_pip_settings_become_uv_arguments_with_pips_precedence():
    config = uv_install.read_pip_config(LISTING)
    assert config["find-links"] == "/opt/wheels"                 # PIP_* over install over global
    assert config["cert"] == "/etc/ssl/certs/ca-certificates.crt"
    args, env = uv_install.uv_arguments(config)
    assert args == ["--extra-index-url", "file:///opt/pypi/simple",
                    "--extra-index-url", "file:///opt/pypi-more/simple", "--find-links", "/opt/wheels",
                    "--index-strategy", "unsafe-best-match", "-c", "/etc/xdg/pip/constraints.txt"]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}


def test_no_pip_configuration_means_uvs_defaults():
    assert uv_install.uv_arguments(uv_install.read_pip_config("")) == ([], {})
    args, _ = uv_install.uv_arguments(uv_install.read_pip_config("global.index-url='https://mirror/simple'\n"
                                                                 "global.no-index='true'\n"
                                                                 "global.trusted-host='mirror'\n"))
    assert args == ["--index-url", "https://mirror/simple", "--no-index",    # one index: uv's default strategy
                    "--allow-insecure-host", "mirror"]


def test_this_machines_pip_configuration_is_read():
    """The listing of this environment's pip parses, and every setting that decides what is installed is used."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    config = uv_install.read_pip_config(listing)
    args, _ = uv_install.uv_arguments(config)
    for key, flag in [("index-url", "--index-url"), ("extra-index-url", "--extra-index-url"),
                      ("find-links", "--find-links"), ("constraint", "-c")]:
        for value in config.get(key, "").split():
            assert [flag, value] in [args[i:i + 2] for i in range(len(args) - 1)], (key, value, args)


def test_the_makefile_installs_a_pinned_uv_and_every_requirements_file_through_the_script():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^UV := uv==\d+\.\d+\.\d+$", text, re.M), "uv must be pinned"
    assert "$(PY) -m pip install -q $(UV)" in text
    installs = re.findall(r"^\t(.*(?:pip install|uv_install\.py).*)$", text, re.M)
    for line in installs:
        if "$(UV)" not in line:
            assert line.startswith("$(PY) tools/uv_install.py"), f"installs without pip's locations: {line}"
    for req in ("requirements.txt", "requirements-lab.txt", "-e ."):
        assert any(req in line for line in installs), req
