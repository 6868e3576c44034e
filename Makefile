# Two entry points: `make run` (set up, then run every pipeline on the generated
# demo dataset) and `make test` (set up with test extras, then run the test suite).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint viz mlflow-ui benchmarks mutation

$(BIN)/kedro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(BIN)/kedro

run: setup
	$(BIN)/kedro run

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Mutation testing of metrics, targets, folds, graph, model/ and the readers (hours on 2 CPU cores;
# reruns only what changed), then the score table. FUNCTIONS limits it to some mutants, by mutmut's
# names with wildcards: make mutation FUNCTIONS='spahgc_kedro.graph.x_spatial_edges*'
mutation: setup
	$(BIN)/pip install -e ".[mutation]"
	# mutmut keeps its map of which tests reach which function and does not redo it for changed sources: a
	# function added since would count as reached by no test
	rm -f mutants/mutmut-stats.json
	SPAHGC_SHARED_DATA=$(CURDIR)/../shared/data $(BIN)/mutmut run --max-children 2 $(FUNCTIONS)
	$(BIN)/python -m benchmarks.mutation --out benchmarks/results/mutation.md

viz: setup
	$(BIN)/kedro viz run --port 4141

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5055

# Regenerate every CPU results table (hours on 2 CPU cores), then the README's results
# section. GPU tables: `bash benchmarks/device_gpu.sh` on a CUDA machine.
benchmarks: setup
	$(BIN)/python -m benchmarks.accuracy --out benchmarks/results/accuracy_her2st.md
	$(BIN)/python -m benchmarks.accuracy --dataset demo --out benchmarks/results/accuracy_demo.md
	$(BIN)/python -m benchmarks.depth_metrics --out benchmarks/results/depth_metrics.md
	$(BIN)/python -m benchmarks.early_stopping --out benchmarks/results/early_stopping_her2st.md
	$(BIN)/python -m benchmarks.uncertainty --out benchmarks/results/uncertainty_her2st.md
	$(BIN)/python -m benchmarks.predict_whole_slide --out benchmarks/results/predict_whole_slide.md
	$(BIN)/python -m benchmarks.chunked_prediction --out benchmarks/results/chunked_prediction.md
	$(BIN)/python -m benchmarks.tiled_training --out benchmarks/results/tiled_training.md
	$(BIN)/python -m benchmarks.evaluation_scaling --spots 10000 50000 --out benchmarks/results/evaluation_scaling.md
	$(BIN)/python -m benchmarks.graph_protocol --out benchmarks/results/graph_protocol.md
	$(BIN)/python -m benchmarks.visium_hd_scaling --tiles-8um 16 --out benchmarks/results/visium_hd_scaling.md
	$(BIN)/python -m benchmarks.scaling --tables stages reference-count --out benchmarks/results/scaling.md
	$(BIN)/python -m benchmarks.scaling --tables fixed-reference --out benchmarks/results/scaling_fixed_reference_cpu.md
	$(BIN)/python -m benchmarks.runners --out benchmarks/results/runners.md
	$(BIN)/python -m benchmarks.runners --dataset her2st --evaluate --cases sequential-all-threads parallel-2 --out benchmarks/results/runners_her2st.md
	$(BIN)/python -m benchmarks.embedding_throughput
	$(BIN)/python -m benchmarks.retrieval_memory
	$(BIN)/python -m benchmarks.update_readme
