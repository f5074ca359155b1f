"""The kernel-free explorer of the built book works in a browser, offline.

The built page ``book/_build/html/explorer_static.html`` (``jupyter-book build book``) is copied with a small test
script appended. In headless Chromium, with the network disabled, the script changes each control (one
``<select>`` at a time, through every option) and records which image the page then shows. The test checks, for
every choice, that the shown image is exactly the map precomputed for that choice (the page's lookup table, read
here from the HTML), or that no image and a reason are shown where the grid has no map.

Skips with a reason when Chromium or the built page is missing (the page is built by ``make book``;
``FGCAM_BOOK_HTML`` names another build folder).
"""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
# the built book's HTML folder; FGCAM_BOOK_HTML points elsewhere (e.g. a build of only this page)
PAGE = Path(os.environ.get("FGCAM_BOOK_HTML", BOOK / "_build" / "html")) / "explorer_static.html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """
<script>
(function () {  // runs at the end of <body>, after the widget's own script

  var root = document.getElementById("fgcam-static-explorer");
  var selects = root.querySelectorAll("select[data-control]");
  var img = root.querySelector("img.fgcam-map"), note = root.querySelector(".fgcam-note");
  var out = [];
  function state(control) {
    var values = {};
    selects.forEach(function (t) { values[t.getAttribute("data-control")] = t.value; });
    return {control: control, values: values, src: img.getAttribute("src") || "",
            visible: img.style.visibility, note: note.textContent};
  }
  out.push(state(null));
  selects.forEach(function (s) {
    for (var i = 0; i < s.options.length; i++) {
      s.selectedIndex = i; s.dispatchEvent(new Event("change"));
      out.push(state(s.getAttribute("data-control")));
    }
    s.selectedIndex = 0; s.dispatchEvent(new Event("change"));
  });
  var pre = document.createElement("pre"); pre.id = "fgcam-probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _table(page_html: str, name: str) -> dict:
    m = re.search(rf"var {name} = (\{{.*?\}});\n", page_html, re.S)
    assert m, f"the page has no lookup table {name}"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    if not PAGE.exists():
        pytest.skip(f"{PAGE} is missing: build the book first (make book)")
    text = PAGE.read_text(encoding="utf-8")
    probe_page = PAGE.with_name("explorer_static_probe.html")
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        profile = tmp_path_factory.mktemp("chromium")
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=20000",
               "--dump-dom", probe_page.as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    finally:
        probe_page.unlink()
    m = re.search(r'<pre id="fgcam-probe"[^>]*>(.*?)</pre>', dom, re.S)  # the theme adds attributes
    assert m, "the probe script did not run: the widget's JavaScript is missing or broken"
    return text, json.loads(html.unescape(m.group(1)))


def test_each_control_shows_the_precomputed_map(probe):
    page, states = probe
    maps, messages = _table(page, "MAPS"), _table(page, "MSG")
    order = ["image", "method", "layer", "class", "denoising"]
    changed = {c: set() for c in order}
    assert states and all(s["control"] in (None, *order) for s in states)
    for s in states:
        key = "|".join(s["values"][c] for c in order)
        if key in maps:
            assert s["src"] == maps[key], f"{key}: the page shows another image than the precomputed one"
            assert s["visible"] == "visible"
        else:
            assert s["visible"] == "hidden" and s["note"], f"{key}: no map, but no reason shown"
            if key in messages:
                assert s["note"] == messages[key]
        if s["control"]:
            changed[s["control"]].add(s["src"])
    for control, sources in changed.items():
        assert len(sources) > 1, f"changing {control!r} never changes the shown image"
