"""README's two commands, the Makefile, .ci/run and the GitHub workflow agree; the workflow passes a linter.

* README.md's "Two commands" block names exactly ``make book`` and ``make test``; both are Makefile targets.
* ``.ci/run`` runs README's test command (and no other make target), requires every optional resource
  (``FGCAM_REQUIRE_ALL=1``) and installs the headless browser it then requires.
* ``.github/workflows/book.yml`` runs README's book command and deploys the folder that command writes to GitHub
  Pages; it is valid against the GitHub-workflow JSON schema (``check-jsonschema --builtin-schema
  vendor.github-workflows``, pinned in requirements.txt; the schema ships with the package, so this runs offline).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import conftest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
MAKEFILE = ROOT / "Makefile"


def readme_commands() -> list[str]:
    """The commands of README's "Two commands" code block, comments stripped."""
    text = README.read_text()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def make_invocations(script: str) -> list[str]:
    """Every ``make ...`` command run by a shell script or a workflow's ``run:`` lines."""
    out = []
    for line in script.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part)
            if words and words[0] == "make":
                out.append(" ".join(words))
    return out


def test_readme_names_exactly_two_commands_that_the_makefile_has():
    commands = readme_commands()
    assert commands == ["make book", "make test"], commands
    targets = set(re.findall(r"^([a-z]+):", MAKEFILE.read_text(), re.M))
    assert {"book", "test", "lab"} <= targets, targets
    assert "make lab" in README.read_text(), "README must say how to open the chapters in JupyterLab"


def test_ci_runs_readmes_test_command_and_requires_every_resource():
    script = CI_RUN.read_text()
    assert make_invocations(script) == ["make test"], make_invocations(script)
    assert "make test" in readme_commands()
    assert re.search(r"^export FGCAM_REQUIRE_ALL=1$", script, re.M), "CI must turn resource skips into failures"
    assert "apt-get install -y" in script and "chromium" in script, "CI must install the browser it requires"
    assert CI_RUN.stat().st_mode & 0o111, ".ci/run must be executable"
    assert "apt-get" not in MAKEFILE.read_text(), "make test must not need root"


def test_workflow_builds_readmes_book_command_and_deploys_its_output():
    flow = yaml.safe_load(WORKFLOW.read_text())
    jobs = flow["jobs"]
    runs = "\n".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    assert make_invocations(runs) == ["make book"] and "make book" in readme_commands()
    uses = {step["uses"].split("@")[0]: step for job in jobs.values() for step in job["steps"] if "uses" in step}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "book/_build/html"
    assert "actions/deploy-pages" in uses
    assert "tools/build_book.py book " in MAKEFILE.read_text()    # jupyter-book build book: writes book/_build/html
    deploy = next(name for name, job in jobs.items()
                  if any(s.get("uses", "").startswith("actions/deploy-pages") for s in job["steps"]))
    assert set(jobs[deploy]["needs"] if isinstance(jobs[deploy]["needs"], list) else [jobs[deploy]["needs"]]) <= set(jobs)
    ids = {s.get("id") for s in jobs[deploy]["steps"]}
    assert re.search(r"steps\.(\w+)\.outputs", jobs[deploy]["environment"]["url"]).group(1) in ids
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_workflow_passes_the_schema_linter():
    lint = Path(sys.executable).with_name("check-jsonschema")
    run = subprocess.run([str(lint), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    """The lint can fail: a misspelt key is an error."""
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    lint = Path(sys.executable).with_name("check-jsonschema")
    run = subprocess.run([str(lint), "--builtin-schema", "vendor.github-workflows", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0


def test_require_skips_with_the_reason_or_fails_under_require_all(monkeypatch):
    monkeypatch.delenv(conftest.REQUIRE_ALL_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="set FGCAM_IMAGENET_SAMPLES"):
        conftest.require(None, "set FGCAM_IMAGENET_SAMPLES")
    assert conftest.require("/a/folder", "unused") == "/a/folder"
    monkeypatch.setenv(conftest.REQUIRE_ALL_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="set FGCAM_IMAGENET_SAMPLES.*FGCAM_REQUIRE_ALL"):
        conftest.require(None, "set FGCAM_IMAGENET_SAMPLES")
