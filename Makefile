# The two commands of the README. Both create .venv first if it is missing or stale.
.PHONY: demo test setup ui

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m svd_dag.demo

test: setup
	.venv/bin/python -m pytest

ui: setup
	scripts/ui.sh
