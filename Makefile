# The two commands a user needs: `make demo` and `make test`. Everything installs itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the results store root of every target (runs, sweeps, figures, tables)
RESULTS ?= results

.PHONY: install test test-slow test-all test-portable demo bench gpu-data gpu-check clean-runs

install: $(STAMP)

# Re-runs only when the package metadata or the pins change: a second `make install` is a no-op.
# --no-compile: Python writes the bytecode of the modules a process imports when it first imports
# them, instead of pip compiling all of torch's files up front (about 20 s of a fresh install).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[test]'
	touch $(STAMP)

# One pytest worker per free core (pytest-xdist; tests/free_cores.py, read after the install;
# TEST_WORKERS=N sets it), each on one torch thread (tests/conftest.py); tests of one file go to
# one worker (--dist loadfile), so a module's fixture is built once.
TEST_WORKERS = $(shell $(PY) tests/free_cores.py)
PYTEST = $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
test: install
	$(PYTEST)

test-slow: install   ## only the tests marked slow (CI runs them after `make test`)
	$(PYTEST) -m slow

test-all: install   ## make test and make test-slow in one run
	$(PYTEST) -m ''

# The tests that compare two computations of one number, under the kernel paths of other CPUs:
# oneDNN limited to SSE4.1, to AVX2 and unlimited, and ATen's own kernels without vector units.
PORTABLE_TESTS = tests/test_estimators.py tests/test_sbn.py tests/test_m2.py tests/test_models.py tests/test_bound.py \
	tests/test_gumbel.py tests/test_optim.py tests/test_diagnostics.py tests/test_training.py tests/test_records.py \
	tests/test_reproduce.py::test_packed_learning_rates_leave_the_records_an_unpacked_sweep_leaves
test-portable: install   ## the numerics-sensitive tests as another CPU would run them (minutes)
	for isa in SSE41 AVX2 ALL; do echo "ONEDNN_MAX_CPU_ISA=$$isa"; ONEDNN_MAX_CPU_ISA=$$isa $(PYTEST) $(PORTABLE_TESTS) || exit 1; done
	# (its own inductor cache: the precompiled header of a vectorised build does not serve this one)
	echo "ATEN_CPU_CAPABILITY=default"; ATEN_CPU_CAPABILITY=default TORCHINDUCTOR_CACHE_DIR=$$(mktemp -d) $(PYTEST) $(PORTABLE_TESTS)

demo: install   ## RESULTS=dir puts its runs under dir/runs/demo (default results)
	$(PY) -m experiments.demo --results-dir $(RESULTS)

DEVICE ?= cpu
bench: install   ## time a plain PyTorch loop, the suite's step (eager and compiled), the replica axis and the bound (DEVICE=cuda on a GPU)
	$(PY) -m experiments.bench --device $(DEVICE)

# ---- GPU (see results/README.md "GPU") ----
gpu-data: install   ## MNIST as IDX files in data/mnist/ (git-ignored), to carry to a GPU machine without network
	$(PY) -m experiments.gpu_check --export-data data/mnist

GPU_PY ?= python3
gpu-check:   ## on the GPU machine, with its own Python (installs nothing): gpu tests, bench, tiny presets, numeric modes
	$(GPU_PY) -m experiments.gpu_check --data-dir data/mnist --out results/gpu_check

clean-runs:
	rm -rf results/runs results/wandb

# ---- reproduction targets ----
# Each target runs the training it needs (finished runs in the results store are reused,
# unfinished ones resumed; vae/sweeps/running.py), then draws from the store into
# $(RESULTS)/figures/$(PRESET) and $(RESULTS)/tables/$(PRESET). PRESET=quick (default) is a
# smoke-level budget for 2 CPU cores; PRESET=converged is the paper's 50,000 steps on 2 CPU cores
# (hours; its records are committed, so a fresh clone redraws without training); PRESET=paper is
# the paper's full protocol (a GPU); PRESET=tiny is the tests' smoke run.
PRESET ?= quick
# Training processes at once: two one-thread processes outpace one two-thread process on 2 cores.
WORKERS ?= 2
# More flags for every sweep, e.g. SWEEP_FLAGS=--pack-lr (a learning-rate grid on the replica axis, the GPU recipe)
SWEEP_FLAGS ?=
SWEEP = $(PY) -m experiments.sweep --preset $(PRESET) --results-dir $(RESULTS) --workers $(WORKERS) $(SWEEP_FLAGS)
FIGURE = $(PY) -m experiments.figures --preset $(PRESET) --results-dir $(RESULTS)

# One target per sweep, so that a make running several figures (`make figures`) runs each sweep once.
SWEEPS = sbn table1 ssl model_question tau_ablation gradvar modern categorical
.PHONY: fig1 fig3 fig4 table1 table2 fig5 model-question tau-ablation gradvar samples leaderboard modern modern-tables \
	categorical categorical-tables figures \
	$(addprefix sweep-,$(SWEEPS))

$(addprefix sweep-,$(SWEEPS)): sweep-%: install
	$(SWEEP) configs/sweeps/$*.yaml

fig1: install   ## the Gumbel-softmax distribution against tau (no training)
	$(FIGURE) fig1

fig3: sweep-sbn   ## test NLL of the SBN during training, every estimator, both latent types
	$(FIGURE) fig3

fig4: sweep-table1   ## test negative ELBO during training, every estimator, both VAEs
	$(FIGURE) fig4

table1: sweep-sbn sweep-table1   ## Table 1, SBN and VAE rows, beside the paper's numbers
	$(PY) -m experiments.tables table1 --preset $(PRESET) --results-dir $(RESULTS)

table2: sweep-ssl   ## Table 2, semi-supervised classification: marginal, GS, ST-GS beside the paper's numbers
	$(PY) -m experiments.tables table2 --preset $(PRESET) --results-dir $(RESULTS)

# (a) times one process per CPU thread, as each run of a WORKERS=2 sweep trains (DEVICE=cuda on a GPU)
fig5: sweep-ssl   ## (a) steps/s of marginal vs GS against the classes; (b) style/class analogies of a GS run
	$(PY) -m experiments.bench --ssl-classes --preset $(PRESET) --device $(DEVICE) --threads 1 --out $(RESULTS)/bench/$(PRESET)
	$(FIGURE) fig5

model-question: sweep-model_question   ## which model, optimiser and metric the paper's VAE numbers fit
	$(PY) -m experiments.tables model-question --preset $(PRESET) --results-dir $(RESULTS)

tau-ablation: sweep-tau_ablation   ## hard vs soft samples under each temperature schedule
	$(FIGURE) tau-ablation

gradvar: sweep-gradvar   ## gradient variance along training; bias / variance against tau
	$(FIGURE) gradvar

samples: sweep-table1   ## reconstructions, prior samples and a latent walk of a Gumbel-softmax run
	$(FIGURE) samples

# ESTIMATOR=name (PLUGINS=module for your own) trains it on the four cells first, at PRESET's budget
ESTIMATOR ?=
PLUGINS ?=
leaderboard: install   ## every estimator of PRESET ranked on Table 1's four cells, and the cost-quality frontier
	$(PY) -m experiments.leaderboard --preset $(PRESET) --results-dir $(RESULTS) --no-progress \
		$(if $(ESTIMATOR),--estimator $(ESTIMATOR)) $(if $(PLUGINS),--plugins $(PLUGINS))

# the 2020 benchmark (configs/sweeps/modern.yaml): 200 Bernoulli latents, linear / nonlinear, MNIST,
# FashionMNIST, Omniglot; modern-tables draws its tables and figure from the store without training
# PARTIAL=1: draw the figure while some cell has no finished run yet (it says PARTIAL; without it, refused)
PARTIAL ?=
MODERN_DRAW = $(PY) -m experiments.tables modern --preset $(PRESET) --results-dir $(RESULTS) && \
	$(FIGURE) modern $(if $(PARTIAL),--partial)
modern: sweep-modern   ## the 2020 benchmark: train what is missing, then its tables and figure
	$(MODERN_DRAW)

modern-tables: install   ## the 2020 benchmark's tables and figure from the records alone
	$(MODERN_DRAW)

# the categorical benchmark of 2023-2026 (configs/sweeps/categorical.yaml): grey-level MNIST, the
# ReinMax scripts' MLP VAE and latent shapes; categorical-tables draws from the store without training
categorical: sweep-categorical   ## the categorical benchmark: train what is missing, then its tables
	$(PY) -m experiments.tables categorical --preset $(PRESET) --results-dir $(RESULTS)

categorical-tables: install   ## the categorical benchmark's tables from the records alone
	$(PY) -m experiments.tables categorical --preset $(PRESET) --results-dir $(RESULTS)

figures: fig1 fig3 fig4 table1 table2 fig5 model-question tau-ablation gradvar samples leaderboard modern
