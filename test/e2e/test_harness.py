"""The end-to-end harness's own guard (cluster.py, running_cluster): a
server whose log records a crash fails the module that ran it, though the
postmaster restarted what crashed and the module's tests may have passed.

Real parts: a throwaway cluster; the backend is made to crash by the signal
a segmentation fault raises.  Every wait is bounded.
"""

import os
import signal

import pytest

from cluster import running_cluster


def test_a_crash_in_the_server_fails_its_cluster():
    with pytest.raises(AssertionError, match=r"records a crash:\n.*terminated by signal 11"):
        with running_cluster("harness", required_extensions=()) as c:
            pid = c.scalar("SELECT pg_backend_pid()")
            c.kill(pid, signal.SIGSEGV)
            c.close_connections()
            # the postmaster logs the crash, resets every backend and takes connections again
            c.wait_until(lambda: "terminated by signal 11" in c.log_text(), what="the crash in the log")
            c.wait_until(lambda: c.scalar("SELECT 1") == 1, what="the server back after the reset")


def test_a_clean_run_passes():
    with running_cluster("harness", required_extensions=()) as c:
        assert c.scalar("SELECT 1") == 1
        assert c.crashes() == []
    if not os.environ.get("PGCB_KEEP_CLUSTER"):
        assert not os.path.exists(c.base_dir)
