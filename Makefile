# Two entry points for a newcomer: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean wheel-check fuzz stress-test

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch from the local CPU wheel first (pinned in constraints.txt), so nothing can pull a CUDA build
	$(BIN)/python -m pip install --quiet -c constraints.txt torch numpy
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# With the official accuracy predictor beside the repository (../shared), the demo searches for accuracy
# (the predictor belongs to the w1.2 supernet); without it, FLOPs stand in as a labelled proxy.
OFFICIAL_PREDICTOR := ../shared/data/ofa_reference/acc_predictor.pth
DEMO_ARGS := $(if $(wildcard $(OFFICIAL_PREDICTOR)),--accuracy-predictor $(OFFICIAL_PREDICTOR) --width-mult 1.2,)

demo: $(STAMP)
	$(BIN)/ofa-deploy demo --out demo-output $(DEMO_ARGS)

# The import layers ([tool.importlinter] in pyproject.toml, no exemptions). import-linter reads a package from one
# folder, and backends/ installs as ofa_deploy.backends: the check runs on a copy laid out as installed.
LINT_IMPORTS = layers=$$(mktemp -d) && cp -r ofa_deploy backends "$$layers"/ && mv "$$layers"/backends "$$layers"/ofa_deploy/ \
	&& (cd "$$layers" && "$(abspath $(BIN))/lint-imports" --no-cache --no-logo "$(abspath pyproject.toml)"); \
	status=$$?; rm -rf "$$layers"; exit $$status

# Two pytest-xdist workers (one per core of the CI machine; TEST_WORKERS=auto on a bigger one). Tests marked
# `serial` (timing claims, device time-outs) all run on one worker, one after another; the 15 slowest are listed.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

# Flaky-test hunt: `make test` RUNS times, each from a fresh clone of HEAD, with a busy loop on one core.
RUNS ?= 10
stress-test:
	$(PYTHON) .ci/stress_test.py --runs $(RUNS)

# Build the wheel, install it (not editable) with torch from constraints.txt into a fresh venv outside the
# checkout, and run the CLI from outside it (devices, --version, compile, benchmark; no torch on --help).
wheel-check: $(STAMP)
	bash .ci/wheel_smoke.sh $(BIN)/python $(PYTHON)

# Property-based fuzzing of every parser and validator with 1000 examples each (make test runs fewer):
# the file parsers, and the validators of cluster replies and deploy records (tests/test_security_fleet.py).
fuzz: $(STAMP)
	OFA_DEPLOY_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz_parsers.py \
		tests/test_security_fleet.py -k "fuzz_parsers or _fuzz"

lint: $(STAMP)
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps ofa==0.1.0.post202307202001
	cd benchmarks && ../$(BIN)/python bench_profiling.py && ../$(BIN)/python bench_validate.py \
		&& ../$(BIN)/python bench_search.py && ../$(BIN)/python bench_adb_loopback.py \
		&& ../$(BIN)/python bench_fpga.py && ../$(BIN)/python bench_repeatability.py && ../$(BIN)/python bench_fidelity.py \
		&& ../$(BIN)/python bench_fit_sample_size.py && ../$(BIN)/python bench_error_sources.py \
		&& ../$(BIN)/python bench_tvm.py && ../$(BIN)/python bench_fleet.py && ../$(BIN)/python bench_int8.py && ../$(BIN)/python bench_int8_accuracy.py \
		&& ../$(BIN)/python bench_progressive_shrinking.py
	@echo "bench_nvidia.py needs an NVIDIA GPU: run it there (see benchmarks/README.md)"
