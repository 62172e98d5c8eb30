# Two entry points, each doing its own set-up in a local virtual environment:
#   make demo   - the main job on the embedded default (synthbirds + small CNN, no download)
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision first and pinned: these exact releases are served from local disk;
# anything looser makes pip fetch a multi-GB build.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.saywhy-installed

.PHONY: demo test install benchmark clean

demo: $(STAMP)
	$(BIN)/saywhy demo

# Two workers that take tests as they free up (pytest-xdist worksteal): measured fastest of
# load, loadfile and worksteal on the 2-core machines (BENCHMARKS.md, test suite).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal

benchmark: $(STAMP)
	$(BIN)/python benchmarks/synthbirds.py

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf .saywhy .pytest_cache
