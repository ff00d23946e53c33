# anonray: the two set-up commands are `make demo` and `make test` (each works alone on a fresh clone).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install models clean browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch + torchvision first, pinned together (a torchvision from PyPI does not import beside another torch)
	$(PY) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(VENV)/bin/anonray models pull

demo: models
	rm -rf demo-in
	$(PY) -m anonray.testing.samples demo-in
	$(VENV)/bin/anonray run demo-in --output demo-out; status=$$?; \
	  $(PY) -c "import pyarrow.parquet as pq; t = pq.read_table('demo-out/_anonray/videos').to_pandas(); \
	print(t[['path','status','frames_in','frames_out','detections_face','detections_plate','frames_masked']].to_string(index=False))"; \
	  exit $$status

test: models
	$(VENV)/bin/ruff check anonray tests benchmarks
	$(PY) -m pytest -q

# Debian's Chromium and its driver, for the review app's browser tests (root: apt-get; skipped where present)
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

lint: $(STAMP)
	$(VENV)/bin/ruff check anonray tests benchmarks

clean:
	rm -rf demo-in demo-out .pytest_cache
