"""End-to-end: the Ansible role deploy/ansible/roles/pg_callback, run with
Debian's ansible-playbook against localhost (connection local) on a
throwaway cluster, through the example playbook and inventory.

The cluster starts without pg_callback: another library preloaded
(auto_explain, to be kept), no callback.* settings, no extension.  The role
builds the extension from this checkout (out of tree, into the PostgreSQL
that PG_CONFIG names), preloads it, writes the callback.* settings, restarts
the cluster with pg_ctl, creates the extension and an endpoint whose secret
comes from an ansible-vault encrypted file.  Then:

  * the first run changes things, the second reports changed=0;
  * a third run with another rate limit and another secret for one endpoint
    and state: absent for the other changes exactly the endpoints
    (alter_endpoint + rotate_secret, drop_endpoint), nothing else;
  * a row inserted into a table with callback.trigger() reaches a real
    receiver on 127.0.0.1, signed with the secret of the third run;
  * the secrets appear in no ansible output (-v) and not in the server log;
  * ansible-lint (where installed) finds nothing in deploy/ansible.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from cluster import PG_BIN, running_cluster
from conftest import record_figure
from test_signing import new_secret, spec_verifies

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ANSIBLE_DIR = os.path.join(ROOT, "deploy", "ansible")
PLAYBOOK = os.path.join(ANSIBLE_DIR, "site.yml")
INVENTORY = os.path.join(ANSIBLE_DIR, "inventory", "localhost.yml")

RUN_TIMEOUT_S = 600
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def pg_config_path():
    """PG_CONFIG as the other scripts take it (default: pg_config on PATH)."""
    pg_config = os.environ.get("PG_CONFIG") or "pg_config"
    found = shutil.which(pg_config) or os.path.join(PG_BIN, "pg_config")
    assert os.access(found, os.X_OK), "no pg_config (PG_CONFIG=%r)" % pg_config
    return os.path.abspath(found)


@pytest.fixture(scope="module")
def workdir():
    # postgres (the become user) must reach ansible's remote temp inside it
    d = tempfile.mkdtemp(prefix="pgcb-ansible-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def bare_cluster():
    """A cluster without pg_callback: auto_explain preloaded, no callback.*."""
    conf = {"shared_preload_libraries": "auto_explain", "callback.database_name": None,
            "callback.ssrf_allowlist": None, "callback.poll_interval": None}
    with running_cluster("ansible", extra_conf=conf, required_extensions=()) as c:
        yield c


def ansible_env(workdir):
    env = dict(os.environ)
    env.update(ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "ansible-local"),
               ANSIBLE_REMOTE_TEMP=os.path.join(workdir, "ansible-remote"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0",
               # per-task times in the output (shown when a run fails)
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
               # ansible(-lint) caches and galaxy files stay in the temp dir
               HOME=workdir, XDG_CACHE_HOME=os.path.join(workdir, "cache"))
    env.pop("ANSIBLE_CONFIG", None)
    return env


class Play:
    """ansible-playbook site.yml with the test's variables and vault file."""

    def __init__(self, workdir, cluster):
        self.workdir = workdir
        self.cluster = cluster
        self.outputs = []
        self.seconds = []
        self.vault_pass = os.path.join(workdir, "vault-pass")
        with open(self.vault_pass, "w") as f:
            f.write(new_secret())  # any text: the vault password

    def write_secrets(self, **secrets):
        """An ansible-vault encrypted variables file holding secrets."""
        path = os.path.join(self.workdir, "secrets.yml")
        with open(path, "w") as f:
            json.dump(secrets, f)
        p = subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", self.vault_pass, path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=ansible_env(self.workdir), cwd=self.workdir, timeout=120)
        assert p.returncode == 0, p.stdout
        with open(path) as f:
            assert f.read().startswith("$ANSIBLE_VAULT;"), "secrets.yml is not encrypted"
        return path

    def variables(self, endpoints):
        c = self.cluster
        return {
            "pg_callback_control": "pg_ctl",
            "pg_callback_data_dir": c.data_dir,
            "pg_callback_pg_ctl": os.path.join(PG_BIN, "pg_ctl"),
            "pg_callback_log_file": c.log_file,
            "pg_callback_socket_dir": c.socket_dir,
            "pg_callback_port": c.port,
            "pg_callback_pg_config": pg_config_path(),
            "pg_callback_build_dir": os.path.join(self.workdir, "build"),
            # no JIT bitcode: halves the build on a busy machine (the role's
            # build and install steps are the same)
            "pg_callback_make_options": ["with_llvm=no"],
            "pg_callback_settings": {"ssrf_allowlist": "127.0.0.0/8",
                                     "callback.poll_interval": "200ms",
                                     "callback.database_name": c.dbname},
            "pg_callback_databases": [c.dbname],
            "pg_callback_endpoints": endpoints,
        }

    def run(self, *endpoints):
        """One play; returns (changed, output) after checking that it succeeded."""
        path = os.path.join(self.workdir, "vars.json")
        with open(path, "w") as f:
            json.dump(self.variables(list(endpoints)), f)
        cmd = ["ansible-playbook", "-v", "-i", INVENTORY, PLAYBOOK, "-e", "@" + path,
               "-e", "@" + os.path.join(self.workdir, "secrets.yml"),
               "--vault-password-file", self.vault_pass]
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=ansible_env(self.workdir), cwd=self.workdir, timeout=RUN_TIMEOUT_S)
        self.seconds.append(time.monotonic() - t0)
        self.outputs.append(p.stdout)
        self.cluster.close_connections()  # the play may have restarted the server
        m = RECAP.findall(p.stdout)
        assert p.returncode == 0 and len(m) == 1, "ansible-playbook failed (exit %d):\n%s\n--- server log\n%s" % (
            p.returncode, p.stdout[-6000:], self.cluster.log_tail())
        ok, changed, unreachable, failed = map(int, m[0])
        assert unreachable == 0 and failed == 0, p.stdout[-3000:]
        return changed, p.stdout


def changed_tasks(output):
    """Names of the tasks that reported a change."""
    names = []
    task = None
    for line in output.splitlines():
        t = re.match(r"^TASK \[(.*)\]", line)
        if t:
            task = t.group(1)
        elif line.startswith("changed:") and task and task not in names:
            names.append(task)
    return names


def test_role_deploys_idempotently_and_events_flow(bare_cluster, workdir, receiver):
    c = bare_cluster
    assert c.scalar("SHOW shared_preload_libraries", dbname="postgres") == "auto_explain"
    assert not c.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_callback'")
    play = Play(workdir, c)
    secret1, secret2 = new_secret(), new_secret()
    play.write_secrets(pgcb_secret=secret1)
    endpoint = {"name": "orders", "url": receiver.url("/orders"), "secret": "{{ pgcb_secret }}",
                "event_types": ["order.*"], "timeout": "5s", "max_attempts": 3,
                "retry_schedule": ["1s", "2 seconds"], "headers": {"X-Deployed-By": "ansible"}}
    # created paused (create_endpoint, then alter_endpoint), secret generated
    audit = {"name": "audit", "url": receiver.url("/audit"), "event_types": ["audit.*"], "enabled": False}

    # 1. everything to do
    changed, out1 = play.run(endpoint, audit)
    assert changed > 0, out1
    for task in ("Build the extension", "Install the extension", "Restart PostgreSQL (pg_ctl)",
                 "Create the extension", "Create, alter or drop the endpoints that differ"):
        assert "pg_callback : " + task in changed_tasks(out1), (task, changed_tasks(out1))
    assert c.scalar("SHOW shared_preload_libraries", dbname="postgres") == "auto_explain, pg_callback"
    assert c.scalar("SHOW callback.ssrf_allowlist", dbname="postgres") == "127.0.0.0/8"
    assert c.scalar("SHOW callback.poll_interval", dbname="postgres") == "200ms"
    row = c.query("SELECT url, event_types, headers, timeout_ms, max_attempts, retry_schedule::text,"
                  " secret = %s FROM callback.callback_endpoints WHERE name = 'orders'", (secret1,))
    assert row == [(receiver.url("/orders"), ["order.*"], {"X-Deployed-By": "ansible"}, 5000, 3,
                    "{00:00:01,00:00:02}", True)], row
    row = c.query("SELECT enabled, secret LIKE 'whsec_%%' FROM callback.callback_endpoints WHERE name = 'audit'")
    assert row == [(False, True)], row
    c.wait_until(lambda: c.worker_pid(), timeout=60, what="a delivery worker after the restart")

    # 2. nothing to do
    changed, out2 = play.run(endpoint, audit)
    assert changed == 0, "second run changed %d task(s): %s\n%s" % (changed, changed_tasks(out2), out2)

    # 3. one endpoint differs in one key and its secret: altered and rotated;
    # the other one is dropped; nothing else changes
    play.write_secrets(pgcb_secret=secret2)
    endpoint["rate_limit"] = 50
    changed, out3 = play.run(endpoint, {"name": "audit", "state": "absent"})
    assert changed_tasks(out3) == ["pg_callback : Create, alter or drop the endpoints that differ"], out3
    assert changed == 1, out3
    row = c.query("SELECT rate_limit, max_attempts, secret = %s, previous_secret IS NULL"
                  " FROM callback.callback_endpoints WHERE name = 'orders'", (secret2,))
    assert row == [(50.0, 3, True, True)], row
    assert c.query("SELECT name FROM callback.callback_endpoints") == [("orders",)]

    # 4. events flow, signed with the secret of the last run
    c.execute("CREATE TABLE orders (id integer PRIMARY KEY, status text)")
    c.execute("CREATE TRIGGER orders_callback AFTER INSERT OR UPDATE OR DELETE ON orders"
              " FOR EACH ROW EXECUTE FUNCTION callback.trigger('order')")
    c.execute("INSERT INTO orders VALUES (42, 'paid')")
    assert receiver.wait_for(1, path="/orders", timeout=60), \
        "no event reached the receiver; endpoint %r\n%s" % (
            c.query("SELECT status, last_error FROM callback.callback_queue"), c.log_tail())
    rec = receiver.requests(path="/orders")[0]
    assert rec.headers.get("x-deployed-by") == "ansible", rec.headers
    assert spec_verifies(secret2, rec), rec.headers
    assert not spec_verifies(secret1, rec), "still signed with the rotated-out secret"
    body = rec.json()
    assert body["type"] == "order.insert" and body["data"]["new"] == {"id": 42, "status": "paid"}, body

    record_figure("ansible-playbook runs: first %.1f s (build, restart), second %.1f s (changed=0), "
                  "third %.1f s (endpoint altered)" % tuple(play.seconds))

    # 5. secrets never logged
    for secret in (secret1, secret2):
        key = secret[len("whsec_"):]
        # booleans, so that a failure does not print the secret either
        leaked = [i for i, out in enumerate(play.outputs, 1) if key in out]
        assert not leaked, "runs %s printed a secret" % leaked
        in_log = key in c.log_text()
        assert not in_log, "the server log holds a secret"


def test_ansible_lint_clean(workdir):
    lint = shutil.which("ansible-lint")
    if lint is None:
        pytest.skip("ansible-lint is not installed (Debian 12 has it: scripts/install-deps.sh)")
    p = subprocess.run([lint, "--offline", "--nocolor"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=ansible_env(workdir), cwd=ANSIBLE_DIR, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 0, p.stdout
    assert re.search(r"Passed with \w+ profile: 0 failure\(s\), 0 warning\(s\)", p.stdout), p.stdout
