"""Packaging: META.json passes the PGXN Meta Spec checks and agrees with the
control file's version; `make dist` makes the archives from the committed
tree (into a temporary directory)."""

import copy
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile

import pytest

import check_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_meta():
    with open(os.path.join(ROOT, "META.json")) as f:
        return json.load(f)


def test_meta_json_is_valid_and_matches_control():
    assert check_meta.problems(load_meta(), ROOT) == []


@pytest.mark.parametrize("change, expect", [
    (lambda m: m.pop("license"), "missing required key 'license'"),
    (lambda m: m.update(version="1.1"), "is not semver"),
    (lambda m: m.update(version="9.9.0"), "differs from pg_callback.control"),
    (lambda m: m["provides"]["pg_callback"].update(version="1.0.0"), "provides.pg_callback.version"),
    (lambda m: m["provides"]["pg_callback"].update(file="nope.sql"), "is not in the repository"),
    (lambda m: m.update(release_status="beta"), "release_status"),
    (lambda m: m["meta-spec"].update(version="2.0.0"), "meta-spec.version"),
])
def test_meta_checks_can_fail(change, expect):
    meta = copy.deepcopy(load_meta())
    change(meta)
    found = check_meta.problems(meta, ROOT)
    assert any(expect in p for p in found), found


def test_make_dist():
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(
            os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: make dist archives the committed tree")
    version = check_meta.control_version(ROOT)
    out = tempfile.mkdtemp(prefix="pgcb-dist-")
    try:
        env = dict(os.environ)
        p = subprocess.run(["make", "-s", "-C", ROOT, "dist", "DISTDIR=" + out],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, p.stdout
        prefix = "pg_callback-%s/" % version
        with zipfile.ZipFile(os.path.join(out, "pg_callback-%s.zip" % version)) as z:
            names = z.namelist()
        with tarfile.open(os.path.join(out, "pg_callback-%s.tar.gz" % version)) as t:
            assert sorted(t.getnames()) == sorted(n.rstrip("/") for n in names)
        for f in ("META.json", "pg_callback.control", "Makefile", "sql/pg_callback--1.0.sql",
                  "src/worker.c", "README.md"):
            assert prefix + f in names, (f, names[:20])
        assert all(n.startswith(prefix) for n in names)
    finally:
        shutil.rmtree(out, ignore_errors=True)
