"""The main command's terminal: one line per asset as it ends, every other line (Dagster's
events, library output, child processes) in the log file it names."""

import re
import subprocess
import sys
import textwrap

TOY = textwrap.dedent("""
    import subprocess, sys
    import dagster as dg
    from svd_dag.demo_progress import output_to_log, run_with_progress

    @dg.asset
    def noisy_a():
        print("NOISE-stdout")
        sys.stderr.write("NOISE-stderr\\n")
        subprocess.run([sys.executable, "-c", "print('NOISE-child-process')"], check=True)

    @dg.asset(deps=[noisy_a])
    def noisy_b(context):
        context.log.info("NOISE-dagster-log")

    @dg.asset(deps=[noisy_b])
    def broken():
        raise ValueError("NOISE-the-error")

    defs = dg.Definitions(assets=[noisy_a, noisy_b, broken], jobs=[dg.define_asset_job("toy", selection="*")])
    import os
    os.makedirs(sys.argv[2], exist_ok=True)
    with dg.DagsterInstance.local_temp(sys.argv[2]) as instance, output_to_log(sys.argv[1]) as terminal:
        job = defs.resolve_job_def("toy")
        result = run_with_progress(instance, job, terminal,
                                   lambda: job.execute_in_process(instance=instance, raise_on_error=False))
        terminal.write(f"success={result.success}\\n")
""")


def test_the_terminal_shows_one_line_per_asset_and_the_log_file_holds_the_rest(tmp_path):
    log = tmp_path / "logs" / "demo.log"
    shown = subprocess.run([sys.executable, "-c", TOY, str(log), str(tmp_path / "dagster_home")], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [re.sub(r"in \d+\.\d s$", "in S s", " ".join(line.split())) for line in lines] == [
        "[svd-dag] toy 1/3 noisy_a done in S s",
        "[svd-dag] toy 2/3 noisy_b done in S s",
        "[svd-dag] toy 3/3 broken FAILED in S s",
        "success=False"]
    assert "NOISE" not in shown.stdout + shown.stderr
    written = log.read_text()
    for noise in ("NOISE-stdout", "NOISE-stderr", "NOISE-child-process", "NOISE-dagster-log", "NOISE-the-error",
                  "STEP_START"):
        assert noise in written, noise
