#!/usr/bin/env python3
"""Checks META.json against the PGXN Meta Spec 1.0.0 (https://pgxn.org/spec/)
and against pg_callback.control: the control file's default_version is the
one place the version is written; META.json must give the same version (as
semver: "1.1" -> "1.1.0").

Usage: check_meta.py [repository root]; prints the problems, exits 1 if any.
"""

import json
import os
import re
import sys

SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
            "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
            "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
            "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
            "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
STATUSES = {"stable", "testing", "unstable"}
NAME = re.compile(r"^[^\s/\\:]{2,}$")


def control_version(root):
    with open(os.path.join(root, "pg_callback.control")) as f:
        m = re.search(r"^default_version\s*=\s*'([^']+)'", f.read(), re.M)
    return m.group(1) if m else None


def as_semver(v):
    """PostgreSQL's "1.1" as semver "1.1.0"."""
    return v + ".0" if re.match(r"^[0-9]+\.[0-9]+$", v or "") else v


def problems(meta, root):
    out = []
    for key in ("name", "version", "abstract", "maintainer", "license", "provides",
                "meta-spec"):
        if key not in meta:
            out.append("missing required key %r" % key)
    spec = meta.get("meta-spec", {})
    if not isinstance(spec, dict) or spec.get("version") != "1.0.0":
        out.append("meta-spec.version must be \"1.0.0\"")
    if not NAME.match(str(meta.get("name", ""))):
        out.append("name %r is not a valid PGXN name" % meta.get("name"))
    if not SEMVER.match(str(meta.get("version", ""))):
        out.append("version %r is not semver" % meta.get("version"))
    if not isinstance(meta.get("abstract"), str) or not meta.get("abstract"):
        out.append("abstract must be a non-empty string")
    m = meta.get("maintainer")
    if not (isinstance(m, str) and m) and not (isinstance(m, list) and m and
                                               all(isinstance(x, str) and x for x in m)):
        out.append("maintainer must be a string or a non-empty list of strings")
    lic = meta.get("license")
    lics = [lic] if isinstance(lic, str) else list(lic) if isinstance(lic, list) else \
        list(lic.keys()) if isinstance(lic, dict) else []
    if not lics or (not isinstance(lic, dict) and any(x not in LICENSES for x in lics)):
        out.append("license %r is not one the spec names" % (lic,))
    provides = meta.get("provides")
    if not isinstance(provides, dict) or not provides:
        out.append("provides must name at least one extension")
        provides = {}
    for ext, p in provides.items():
        if not isinstance(p, dict):
            out.append("provides.%s must be an object" % ext)
            continue
        for key in ("file", "version"):
            if key not in p:
                out.append("provides.%s.%s is required" % (ext, key))
        if "version" in p and not SEMVER.match(str(p["version"])):
            out.append("provides.%s.version %r is not semver" % (ext, p["version"]))
        for key in ("file", "docfile"):
            if key in p and not os.path.isfile(os.path.join(root, p[key])):
                out.append("provides.%s.%s %r is not in the repository" % (ext, key, p[key]))
    for phase, rels in (meta.get("prereqs") or {}).items():
        if phase not in PHASES:
            out.append("prereqs phase %r unknown" % phase)
            continue
        for rel, reqs in (rels or {}).items():
            if rel not in RELATIONS:
                out.append("prereqs.%s relation %r unknown" % (phase, rel))
            for name, ver in (reqs or {}).items():
                if not (ver == 0 or SEMVER.match(str(ver)) or
                        re.match(r"^\s*(==|!=|>=|<=|>|<)?\s*\d+\.\d+\.\d+", str(ver))):
                    out.append("prereqs.%s.%s.%s version %r invalid" % (phase, rel, name, ver))
    if "release_status" in meta and meta["release_status"] not in STATUSES:
        out.append("release_status %r is not one of %s" % (meta["release_status"],
                                                             sorted(STATUSES)))
    if "tags" in meta and not (isinstance(meta["tags"], list) and
                               all(isinstance(t, str) and 0 < len(t) <= 255
                                   for t in meta["tags"])):
        out.append("tags must be a list of strings up to 255 characters")

    want = as_semver(control_version(root))
    if meta.get("version") != want:
        out.append("version %r differs from pg_callback.control's default_version (%r)"
                   % (meta.get("version"), want))
    for ext, p in provides.items():
        if isinstance(p, dict) and p.get("version") != want:
            out.append("provides.%s.version %r differs from pg_callback.control's (%r)"
                       % (ext, p.get("version"), want))
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "META.json")) as f:
        meta = json.load(f)
    found = problems(meta, root)
    for p in found:
        print("META.json: " + p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
