"""bench/ingest.py counts the CPU of child processes still running, like the parser pool's."""

import subprocess
import sys

from bench.ingest import cpu_seconds

BURN_THEN_WAIT = """
import sys, time
started = time.process_time()
while time.process_time() - started < 0.6:
    pass
print("burnt", flush=True)
time.sleep(60)
"""


def test_cpu_of_a_running_child_is_counted() -> None:
    before = cpu_seconds()
    child = subprocess.Popen(
        [sys.executable, "-c", BURN_THEN_WAIT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "burnt"
        assert child.poll() is None  # still running: rusage does not know about it yet
        assert cpu_seconds() - before >= 0.55
    finally:
        child.kill()
        child.wait()
