# The two commands a newcomer runs: `make demo` and `make test`. Each creates what it needs.
PY ?= python3
VENV := .venv
# The compiled build (scripts/build-mypyc.sh): built once, rebuilt only when the sources change.
COMPILED_VENV := $(or $(SOFAMESH_CACHE),.cache)/venv-mypyc

.PHONY: demo test venv compiled wheel clean fuzz

venv:
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(VENV)/bin/python -m pip install -q -e '.[dev,demo]'
	@bash scripts/reinstall-otel-proto.sh $(VENV)/bin/python

# The demo runs on the compiled build; where it cannot be built (no C compiler or Python headers)
# it says why and runs on the pure-Python install instead.
demo: venv
	@PY=$(PY) bash scripts/build-mypyc.sh $(COMPILED_VENV); rc=$$?; \
	if [ $$rc -eq 0 ]; then \
	  echo "== the demo on the compiled build ($(COMPILED_VENV))"; \
	  $(COMPILED_VENV)/bin/python -P -m sofamesh demo; \
	elif [ $$rc -eq 3 ]; then \
	  echo "== the compiled build is not available (above: why); the demo runs on the pure-Python install"; \
	  $(VENV)/bin/sofamesh demo; \
	else \
	  echo "== building the compiled build failed (exit $$rc; above: why)"; exit $$rc; \
	fi

compiled:
	PY=$(PY) bash scripts/build-mypyc.sh $(COMPILED_VENV)

# A wheel for this platform with the mypyc extensions (pure Python where no C compiler exists), in dist/.
wheel: venv
	@$(VENV)/bin/python -m pip install -q build
	$(VENV)/bin/python -m build --wheel --outdir dist .

test:
	bash scripts/test

# Coverage-guided fuzzing of every decoder and of the config inputs (docs/fuzzing.md); FUZZ_FLAGS are libFuzzer's.
FUZZ_TARGETS ?= http1_server http1_client http2_server bolt_server bolt_client dubbo_server dubbo_client hessian thrift_server thrift_client xds_translation proxy_yaml policy osr_api
FUZZ_FLAGS ?= -max_total_time=60
fuzz: venv
	@for t in $(FUZZ_TARGETS); do echo "== $$t"; $(VENV)/bin/python -m fuzz.run $$t $(FUZZ_FLAGS) || exit 1; done

clean:
	rm -rf $(VENV) .cache dist build .pytest_cache .mypy_cache .ruff_cache
