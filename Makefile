# The two commands of the README. Both create .venv first if it is missing or stale.
.PHONY: demo test setup ui

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m svd_dag.demo

test: setup
	.venv/bin/python -m pytest

ui: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$${SVD_DAG_HOME:-$$PWD/.svd_dag}/dagster} .venv/bin/dagster dev -w workspace.yaml
