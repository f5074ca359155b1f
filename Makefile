# fgcam: two commands.  `make test` runs the whole test suite; `make book` builds the executable book (offline
# profile).  Both create .venv and install every pinned dependency when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fgcam-installed
WSTATIC := book/_wstatic
# The real ImageNet MobileNets and photos used by the real-ImageNet chapter and tests (beside the checkout).
FGCAM_REAL_MODELS ?= $(CURDIR)/../shared/real-imagenet
export FGCAM_REAL_MODELS

.PHONY: test book install vendor chromium bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP) $(WSTATIC)/.vendored chromium
	$(PY) -m pytest tests book --nbval-lax --ignore=book/_build -p no:cacheprovider

# Headless Chromium (Debian package) for the test that renders built pages.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# MathJax and the ipywidgets HTML manager, vendored from npm so the built book works without internet.
$(WSTATIC)/.vendored: book/package.json book/package-lock.json
	cd book && npm ci --no-audit --no-fund --silent
	rm -rf $(WSTATIC) && mkdir -p $(WSTATIC)/widgets
	cp -r book/node_modules/mathjax/es5 $(WSTATIC)/mathjax
	cp book/node_modules/requirejs/require.js $(WSTATIC)/widgets/
	cd book/node_modules/@jupyter-widgets/html-manager/dist && find . -maxdepth 1 -name '*.js' -exec cp {} ../../../../_wstatic/widgets/ \;
	touch $@

vendor: $(WSTATIC)/.vendored

book: $(STAMP) $(WSTATIC)/.vendored
	$(VENV)/bin/jupyter-book build book -W -n --keep-going

bench: $(STAMP)
	$(PY) -m fgcam.bench

clean:
	rm -rf book/_build $(WSTATIC) book/node_modules
