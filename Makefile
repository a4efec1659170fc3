# Every target creates .venv when missing and installs a CPU torch before the package,
# so a fresh machine never pulls a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint accuracy clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,hf,explore,ray]'
	# MLCommons Chakra's protobufs, without the ~100 packages its analysis tools pull
	$(PY) -m pip install -q --no-deps mlc-chakra
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/chipletc compile gpt3-175b --target cc-7nm-gpt3

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pytest tests/bench -s -q -p no:cacheprovider

# docs/accuracy.md and the README's accuracy table, from the calibration sets
accuracy: $(STAMP)
	$(PY) tools/write_accuracy.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
