# Realtime Pipelines — every target installs what it needs first.
#   make run    install, then run the logs job on its built-in synthetic stream
#               and write the HTML report of the run (its path is printed)
#   make report the HTML report of every job's output under $(REPORT_DIR)
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOB    ?= logs
ARGS   ?=
REPORT_DIR ?= output

.PHONY: install run report test fuzz bench eval-logs eval-sensors docs templates demo-kafka demo-pubsub template launch submit-dataflow submit-flink clean help

help:
	@echo "make install | run [JOB=logs ARGS=...] | report [REPORT_DIR=output] | test | fuzz [FUZZ_ARGS=...] | demo-kafka | demo-pubsub [JOB=...] | bench | eval-logs [LOGHUB_DIR=...] | eval-sensors | docs | templates | clean"
	@echo "production: make template|launch|submit-dataflow|submit-flink JOB=... (docs/production.md)"

install: $(STAMP)

# Re-installs only when the requirements or setup.py change.
# The BigQuery emulator of the integration tests gets a venv of its own.
$(STAMP): requirements.txt requirements-dev.txt requirements-bqemulator.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	test -x $(VENV)/bqemulator/bin/python || $(PYTHON) -m venv $(VENV)/bqemulator
	$(VENV)/bqemulator/bin/python -m pip install --quiet -r requirements-bqemulator.txt
	touch $(STAMP)

# The run ends with the HTML report of its output (output/$(JOB)/report.html;
# with another --sink in ARGS, run `make report REPORT_DIR=that folder`).
run: install
	$(PY) -m pipelines $(JOB) --streaming $(ARGS)
	$(PY) -m pipelines report output/$(JOB)

# One HTML page (offline: figures inline) for every job's output found under
# REPORT_DIR; written to REPORT_DIR/report.html.
report: install
	$(PY) -m pipelines report $(REPORT_DIR)

test: install
	$(PY) -m pytest -q

# Fuzz every decoder (fuzz/targets.py) with a million generated inputs
# (hypothesis, structure-aware); prints the counts.  A short run is part of
# make test (tests/transforms/test_fuzz_decoders.py).
fuzz: install
	$(PY) -m fuzz $(FUZZ_ARGS)

# The real streaming path in one command: start a local Kafka-protocol broker
# (or Google's Pub/Sub emulator), publish the synthetic stream into it, run the
# job reading it, with alerts published to a topic (pipelines/demo.py).
demo-kafka: install
	$(PY) -m pipelines.demo kafka $(JOB)

demo-pubsub: install
	$(PY) -m pipelines.demo pubsub $(JOB)

# Benchmarks: events/s per core against plain pyarrow, peak memory of a
# 10-million-record replay; writes bench/RESULTS.md (a few minutes).
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# Log template mining measured on Loghub: grouping accuracy per data set and
# the average; predicted templates in output/eval-logs/<Name>.csv.
LOGHUB_DIR ?= ../shared/loghub
eval-logs: install
	$(PY) -m bench.eval_logs --loghub_dir $(LOGHUB_DIR)

# The sensors job's detector on NAB's seven realKnownCause series (../shared/nab),
# scored with NAB's standard profile; writes output/eval-sensors/detections.csv.
eval-sensors: install
	$(PY) bench/eval_sensors.py $(ARGS)

# Regenerates the README's option and table reference from the code.
docs: install
	$(PY) -m pipelines.docs --write README.md

# Regenerates templates/<job>/ (metadata.json, main.py, Dockerfile) from the
# job's options; a test fails when they are stale.
templates: install
	$(PY) -m pipelines.templates --write

# ---- Production (docs/production.md).  These need a cloud project or a Flink
# cluster; nothing below runs in the tests.
PROJECT      ?=
REGION       ?=
REPOSITORY   ?= realtime-pipelines
BUCKET       ?=
TEMP         ?= $(BUCKET)/tmp
IMAGE        ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/$(JOB):latest
TEMPLATE     ?= $(BUCKET)/templates/$(JOB).json
JOB_NAME     ?= $(subst _,-,$(JOB))-$(shell date +%Y%m%d-%H%M%S)
PARAMETERS   ?=
FLINK_MASTER ?= localhost:8081
FLINK_ENV    ?= DOCKER

need = $(if $($(1)),,$(error give $(1)=..., see docs/production.md))

# Build the launcher image (templates/$(JOB)/Dockerfile) and the Flex
# Template spec file with its parameters from templates/$(JOB)/metadata.json.
template: templates
	$(call need,PROJECT)$(call need,REGION)$(call need,BUCKET)
	docker build -f templates/$(JOB)/Dockerfile -t $(IMAGE) .
	docker push $(IMAGE)
	gcloud dataflow flex-template build $(TEMPLATE) \
	    --project $(PROJECT) --image $(IMAGE) --sdk-language PYTHON \
	    --metadata-file templates/$(JOB)/metadata.json

# Run a job from the template: PARAMETERS=source=...,sink=...
launch:
	$(call need,PROJECT)$(call need,REGION)$(call need,BUCKET)
	gcloud dataflow flex-template run $(JOB_NAME) --project $(PROJECT) \
	    --region $(REGION) --template-file-gcs-location $(TEMPLATE) \
	    --additional-experiments enable_streaming_engine \
	    $(if $(PARAMETERS),--parameters $(PARAMETERS),)

# Submit straight from this checkout (ARGS: the job's options, e.g. --source).
submit-dataflow: install
	$(call need,PROJECT)$(call need,REGION)$(call need,TEMP)
	$(PY) -m pipelines $(JOB) --runner DataflowRunner --project $(PROJECT) \
	    --region $(REGION) --temp_location $(TEMP) --job_name $(JOB_NAME) \
	    --setup_file ./setup.py --enable_streaming_engine $(ARGS)

submit-flink: install
	$(PY) -m pipelines $(JOB) --runner FlinkRunner \
	    --flink_master $(FLINK_MASTER) --environment_type $(FLINK_ENV) \
	    --setup_file ./setup.py $(ARGS)

clean:
	rm -rf output bench/out .pytest_cache build *.egg-info
