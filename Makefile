# fgcam: two commands.  `make test` runs the whole test suite; `make book` builds the executable book (offline
# profile).  Both create .venv and install every pinned dependency when it is missing or out of date.  Neither needs
# root, a network beyond the package registries, or any folder beside the checkout: the models, photos and test data
# they use are in the repository.  `make lab` opens the chapters in JupyterLab (installed on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fgcam-installed
LAB_STAMP := $(VENV)/.fgcam-lab-installed
WSTATIC := book/_wstatic
UV := uv==0.13.9

.PHONY: test book lab install vendor bench clean

install: $(STAMP)

# uv (pinned above, installed with pip) installs the pinned requirements from where pip is configured to install from
# (tools/uv_install.py): it unpacks and byte-compiles on every core, where pip uses one.  The byte-code must be
# compiled: where PYTHONDONTWRITEBYTECODE is set, each process would compile what it imports again.
# The kernelspec `python3` in the venv makes every notebook run on this environment's Python (it takes precedence
# over a user-wide `python3` kernelspec, which would otherwise run the chapters on another interpreter).
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(UV)
	$(PY) tools/uv_install.py -q --compile-bytecode -r requirements.txt
	$(PY) tools/uv_install.py -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fgcam .venv)" >/dev/null
	touch $(STAMP)

# Every test, including each chapter executed as `make book` executes it (tests/test_notebooks.py).  Tests that need
# something a clone cannot ship (the ImageNet sample photos: FGCAM_IMAGENET_SAMPLES; a headless Chromium) skip with
# the reason; .ci/run sets FGCAM_REQUIRE_ALL=1, which turns those skips into failures.
test: $(STAMP) $(WSTATIC)/.vendored
	$(PY) -m pytest tests -p no:cacheprovider --durations=15

# MathJax and the ipywidgets HTML manager, vendored from npm so the built book works without internet.
$(WSTATIC)/.vendored: book/package.json book/package-lock.json
	cd book && npm ci --no-audit --no-fund --silent
	rm -rf $(WSTATIC) && mkdir -p $(WSTATIC)/widgets
	cp -r book/node_modules/mathjax/es5 $(WSTATIC)/mathjax
	cp book/node_modules/requirejs/require.js $(WSTATIC)/widgets/
	cd book/node_modules/@jupyter-widgets/html-manager/dist && find . -maxdepth 1 -name '*.js' -exec cp {} ../../../../_wstatic/widgets/ \;
	touch $@

vendor: $(WSTATIC)/.vendored

# A failing or timed-out cell stops the build with an error (book/_config.yml: raise_on_error, per-cell timeout).
# tools/build_book.py is `jupyter-book build book ...` with the chapters executed in parallel, one per core.
book: $(STAMP) $(WSTATIC)/.vendored
	$(PY) tools/build_book.py book -W -n --keep-going

# JupyterLab on book/, with this environment's Python as the kernel.  Pinned in requirements-lab.txt.
$(LAB_STAMP): $(STAMP) requirements-lab.txt
	$(PY) tools/uv_install.py -q --compile-bytecode -r requirements-lab.txt
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter-lab --ServerApp.root_dir=book $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(PY) -m fgcam.bench

clean:
	rm -rf book/_build $(WSTATIC) book/node_modules
