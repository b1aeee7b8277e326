# dann-study: from a fresh clone to every figure.
#
#   make figures PROFILE=paper   the committed notebooks and figures/ (the papers' step counts, 5 seeds on
#                                headline rows): train the missing runs (sweep; hours from an empty store,
#                                none from a clone), then execute the notebooks in place
#   make figures                 the same for the quick profile (sized for 2 cores), into .tmp/quick/
#                                (IN_PLACE=1: in place)
#   make sweep PROFILE=paper     only train the missing runs (resumable; WORKERS=N, TIME_LIMIT=minutes)
#   make figures ONLY=01,03      only some notebooks (by number)
#   make figures PARTIAL=1       train nothing: render the runs stored so far (while a sweep runs)
#   make test                    unit tests + every notebook under nbval, smoke profile
#   make report                  the results tables of results/$(PROFILE)/ (Markdown)
#
# The first target run creates the virtual environment $(VENV) (or reuses an existing one)
# and installs TORCH_SPEC, then this project with its test extra. TORCH_SPEC pins the torch
# build this study was run with; where that build is not available, override it, e.g.
#   make figures TORCH_SPEC="torch torchvision"
# (pyproject.toml accepts torch>=2.4,<2.15 with a matching torchvision.)
#
# Data: DANNLIB_DATA from the environment is passed through to the notebooks; unset, the
# data root is the project's data/ folder (see data/README.md).

VENV       ?= .venv
PYTHON     ?= python3
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE    ?= quick
ONLY       ?=
SEEDS      ?=
IN_PLACE   ?=
# Where `make test` lets the notebooks write, so that tests never touch figures/ or results/.
TEST_OUT   ?= $(CURDIR)/.tmp/test

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.installed

ifdef DANNLIB_DATA
export DANNLIB_DATA
endif

.DEFAULT_GOAL := help
.PHONY: help install figures sweep test bench report lab clean distclean

help:
	@sed -n '3,12p' "$(firstword $(MAKEFILE_LIST))" | sed 's/^# *//'

install: $(STAMP)

# A real file target: redone when pyproject.toml changes; an existing venv is reused.
$(STAMP): pyproject.toml
	test -x "$(VPY)" || $(PYTHON) -m venv "$(VENV)"
	"$(VPY)" -m pip install $(TORCH_SPEC)
	"$(VPY)" -m pip install -e ".[test,dask]"
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  echo "make install: no Chromium here, so tests/test_browser.py will skip (CI installs it: apt-get install chromium)"
	touch "$@"

# Only the committed profile (paper) executes notebooks/ and writes figures/ in place; another
# profile writes its notebooks and figures to .tmp/<profile>/ unless IN_PLACE=1. Records go to
# results/<profile>/ either way. Each notebook is a transaction (see python -m dann_study regenerate -h).
figures: $(STAMP)
	"$(VPY)" -m dann_study regenerate --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(IN_PLACE),--in-place) $(if $(PARTIAL),--partial)

sweep: $(STAMP)
	"$(VPY)" -m dann_study sweep --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(TIME_LIMIT),--time-limit $(TIME_LIMIT))

# nbval runs each notebook with its folder as working directory, on this venv's Python
# (--nbval-current-env), under the smoke profile; outputs are not compared (--nbval-lax).
# pytest's exit status 5 (nothing collected) fails like any other. ruff runs first (pyproject's
# [tool.ruff]: unused or redefined imports, undefined names, unused variables, long lines);
# tests/test_imports.py checks the import order.
test: $(STAMP)
	"$(VPY)" -m ruff check dannlib dann_study tests benchmarks
	rm -rf "$(TEST_OUT)"
	mkdir -p "$(TEST_OUT)"
	DANNLIB_PROFILE=smoke DANNLIB_FIGURES="$(TEST_OUT)/figures" DANNLIB_RESULTS="$(TEST_OUT)/results" \
	  DANNLIB_STORE="$(TEST_OUT)/results/runs" \
	  "$(VPY)" -m pytest tests --nbval-lax --nbval-current-env notebooks -p no:cacheprovider; \
	  rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit status 5)" >&2; fi; \
	  exit $$rc

# The step benchmark (python -m benchmarks.bench, from the project root; records in results/bench/),
# then pytorch-adapt's DANN beside dannlib's on MNIST -> MNIST-M (benchmarks/peer/peer-bench.{md,png,json};
# first installs the peer's pinned versions into benchmarks/peer/.peer-packages when that folder does not
# hold them). Without the peer or the data, the second part prints "skipped: <reason>" and the target
# still succeeds. Then the digits network's pool-then-ReLU order against the paper's (benchmarks/pool_relu.json);
# last, each step's FLOPs against this CPU's best rates and the paper profile's FLOPs (benchmarks/roofline.json).
bench: $(STAMP)
	"$(VPY)" -m benchmarks.bench
	"$(VPY)" benchmarks/peer/run_peer.py --install
	"$(VPY)" benchmarks/pool_relu.py
	"$(VPY)" benchmarks/roofline.py

# The results tables (Markdown) of results/$(PROFILE)/, built from the notebooks' records.
report: $(STAMP)
	"$(VPY)" -m dann_study report --profile $(PROFILE)

# JupyterLab from the venv, serving the project root (open notebooks/01_toy_blobs.ipynb first).
# The notebooks' profile comes from DANNLIB_PROFILE (default paper, the committed one): DANNLIB_PROFILE=smoke make lab.
# LAB_ARGS adds options, e.g. make lab LAB_ARGS="--port=8899 --no-browser".
LAB_ARGS ?=
lab: $(STAMP)
	cd "$(CURDIR)" && "$(VPY)" -m jupyter lab --ServerApp.root_dir="$(CURDIR)" \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf .tmp notebooks/.failed build *.egg-info
	rm -f notebooks/.*.running.ipynb
	find . -path "./$(VENV)" -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)"
