"""pytest fixtures for pg_callback's end-to-end tests: a real PostgreSQL 15
cluster (module-scoped) and a real HTTP receiver on loopback (per test)."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # test/, for receiver.py

from cluster import running_cluster  # noqa: E402
from receiver import Receiver  # noqa: E402

# record_figure() attaches figures to the junit report (a testsuite
# <property name="figure">, named after the test) through pytest's
# record_testsuite_property, which every junit_family accepts; set per test
# by _figures below.
_record_property = None


@pytest.fixture
def receiver():
    r = Receiver(host="127.0.0.1", port=0).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def cluster(request):
    name = request.module.__name__.rsplit(".", 1)[-1].replace("test_", "")[:20]
    extra = getattr(request.module, "CLUSTER_CONF", None) or {}
    with running_cluster(name, extra_conf=extra) as c:
        yield c


_ENDPOINT_ARGS = ("event_types", "headers", "timeout", "secret", "max_attempts",
                  "retry_schedule", "rate_limit", "rate_burst", "failure_threshold",
                  "breaker_cooldown", "ordered", "transform", "on_response", "batch_size",
                  "batch_window")


def make_endpoint(cluster, name, url, **kw):
    """callback.create_endpoint(name => ..., url => ..., <kw> => ...) -> id.

    Values go as query parameters; lists become arrays, dicts jsonb,
    numbers given for timeout / intervals are seconds."""
    from psycopg2.extras import Json

    args = ["name => %s", "url => %s"]
    params = [name, url]
    casts = {"event_types": "text[]", "headers": "jsonb", "timeout": "interval",
             "secret": "text", "max_attempts": "integer", "retry_schedule": "interval[]",
             "rate_limit": "double precision", "rate_burst": "integer",
             "failure_threshold": "integer", "breaker_cooldown": "interval",
             "ordered": "boolean", "transform": "text", "on_response": "text",
             "batch_size": "integer", "batch_window": "interval"}
    for k, v in kw.items():
        if v is None:
            continue
        cast = casts.get(k)
        if isinstance(v, dict):
            v = Json(v)
        elif k in ("timeout", "breaker_cooldown", "batch_window") and isinstance(v, (int, float)):
            v = "%s seconds" % v
        elif k == "retry_schedule" and isinstance(v, (list, tuple)):
            v = ["%s seconds" % x if isinstance(x, (int, float)) else x for x in v]
        elif k == "event_types" and isinstance(v, str) and not v.startswith("{"):
            v = [v]
        args.append("%s => %%s%s" % (k, "::" + cast if cast else ""))
        params.append(v)
    sql = "SELECT callback.create_endpoint(%s)" % ", ".join(args)
    return cluster.scalar(sql, params)


@pytest.fixture(autouse=True)
def _figures(request, record_testsuite_property):
    global _record_property
    node = request.node.nodeid

    def record(name, text):
        record_testsuite_property(name, "%s: %s" % (node, text))
    _record_property = record
    yield
    _record_property = None


def record_figure(line):
    """Keep one measured figure in the test output: printed (pytest -s, and
    the captured stdout of a failing test) and a junit testsuite property
    "figure" naming the test (--junitxml).  Nothing is written to a fixed
    file."""
    import time as _t
    text = "%s %s" % (_t.strftime("%Y-%m-%dT%H:%M:%S"), line)
    print(text)
    if _record_property is not None:
        _record_property("figure", text)


@pytest.fixture
def endpoint_factory(cluster):
    """make_endpoint bound to the cluster; endpoints made are dropped
    (force => true) at the end of the test."""
    made = []

    def factory(name, url, **kw):
        eid = make_endpoint(cluster, name, url, **kw)
        made.append(name)
        return eid

    yield factory
    for name in made:
        try:
            cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
        except Exception:
            pass
