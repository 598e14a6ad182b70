"""End-to-end: process_callbacks() in single-user mode (`postgres --single`),
where no postmaster runs and no worker: it delivers, and so does a second
call in the same session.

Review of 2026-12-02 (helper-66): the first call failed on adding the
postmaster-death event to its wait set (there is no postmaster to watch),
and the second one, finding the set-up half made, crashed the process.  The
engine's set-up is now all or nothing (src/delivery.c), and the wait set
watches the postmaster only under one (src/http.c).
"""

import subprocess

from cluster import Cluster, _IS_ROOT, TEST_DB
from conftest import make_endpoint


def test_process_callbacks_in_single_user_mode(receiver):
    c = Cluster(name="single")
    try:
        c.start()
        make_endpoint(c, "single", receiver.url("/single"), event_types=["single.*"])
        c.execute("SELECT callback.pause_endpoint('single')")
        c.execute("SELECT callback.enqueue('single.a', '{\"n\": 1}')")
        c.stop()

        cmd = [c._bin("postgres"), "--single", "-D", c.data_dir, TEST_DB]
        if _IS_ROOT:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        script = ("SELECT callback.resume_endpoint('single');\n"
                  "SELECT callback.process_callbacks() AS first;\n"
                  "SELECT callback.enqueue('single.b', '{\"n\": 2}');\n"
                  "SELECT callback.process_callbacks() AS second;\n")
        p = subprocess.run(cmd, input=script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120, cwd=c.base_dir)
        assert p.returncode == 0, "postgres --single exited %d:\n%s" % (p.returncode, p.stdout)
        assert "ERROR" not in p.stdout, p.stdout
        assert receiver.wait_for(2, "/single", timeout=30), p.stdout
        assert sorted(r.json()["type"] for r in receiver.requests("/single")) == ["single.a", "single.b"]

        c.start()
        assert c.query("SELECT event_type, status::text FROM callback.callback_queue "
                       " ORDER BY event_type") == [("single.a", "delivered"), ("single.b", "delivered")]
    finally:
        c.stop()
        c.cleanup()
