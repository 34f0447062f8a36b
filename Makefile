# The two commands a newcomer runs: `make demo` and `make test`. Each creates what it needs.
PY ?= python3
VENV := .venv

.PHONY: demo test venv clean fuzz

venv:
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(VENV)/bin/python -m pip install -q -e '.[dev,demo]'
	@bash scripts/reinstall-otel-proto.sh $(VENV)/bin/python

demo: venv
	$(VENV)/bin/sofamesh demo

test:
	bash scripts/test

# Coverage-guided fuzzing of every decoder and of the config inputs (docs/fuzzing.md); FUZZ_FLAGS are libFuzzer's.
FUZZ_TARGETS ?= http1_server http1_client http2_server bolt_server bolt_client dubbo_server dubbo_client hessian thrift_server thrift_client xds_translation proxy_yaml policy osr_api
FUZZ_FLAGS ?= -max_total_time=60
fuzz: venv
	@for t in $(FUZZ_TARGETS); do echo "== $$t"; $(VENV)/bin/python -m fuzz.run $$t $(FUZZ_FLAGS) || exit 1; done

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
