"""The network guard reaches the processes a guarded script starts, so an offline proof covers
an encoder process or a parser worker as well as the script's own process."""

from tests.network_guard import NETWORK_GUARD, run_guarded

CHILD_SCRIPT = (
    NETWORK_GUARD
    + r'''
import subprocess

reaching_out = """
import socket
try:
    socket.create_connection(("192.0.2.1", 9), timeout=1)
except OSError:
    pass
"""
subprocess.run([sys.executable, "-c", reaching_out], check=True)
print(json.dumps({"attempts": attempts}))
'''
)


def test_a_process_the_guarded_script_starts_is_guarded_and_reported() -> None:
    report = run_guarded(CHILD_SCRIPT, unset=())
    # create_connection looks the address up first, and fails there.
    assert [event for _, event, _ in report["attempts"]] == ["socket.getaddrinfo"]
    assert "192.0.2.1" in report["attempts"][0][2]
