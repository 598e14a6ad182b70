"""perf profiles for --profile: perf record of the worker (or of the
postmaster and the worker, so that every backend forked from then on is
sampled too) and a text report per part in bench/out/perf-<name>.txt, with
the call chains under the functions that matter."""

import os
import re
import shutil
import signal
import subprocess
import time

from lib.util import log


def _perf_frame(line):
    """'  5a5e6d RelationIdGetRelation+0x8d (/usr/lib/.../postgres)' -> 'RelationIdGetRelation [postgres]'"""
    p = line.strip().split(None, 1)
    if len(p) < 2:
        return None
    m = re.match(r"(.*?)(\+0x[0-9a-f]+)? \((.*)\)$", p[1])
    if not m:
        return p[1]
    sym, dso = m.group(1), os.path.basename(m.group(3))
    if sym == "[unknown]":
        sym = "0x" + p[0]
    return "%s [%s]" % (sym, dso)


def perf_under(script_text, roots, top=40):
    """For each root function: share of all samples with it on the stack, its
    direct callees, and the functions below it by inclusive share (a function
    counts once per sample), from `perf script` output."""
    samples = []
    for block in script_text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        frames = [_perf_frame(x) for x in lines[1:] if x.startswith(("\t", " "))]
        frames = [x for x in frames if x]
        if frames:
            samples.append(frames)
    out = []
    for root in roots:
        inc, kids, n = {}, {}, 0
        for frames in samples:
            names = [x.split(" [")[0] for x in frames]
            if root not in names:
                continue
            n += 1
            i = names.index(root)
            for x in set(frames[:i]):
                inc[x] = inc.get(x, 0) + 1
            k = frames[i - 1] if i > 0 else "(self)"
            kids[k] = kids.get(k, 0) + 1
        if not n:
            continue
        out.append("### under %s: %d of %d samples (%.1f%%)" % (root, n, len(samples), 100.0 * n / len(samples)))
        out.append("  direct callees:")
        for k, c in sorted(kids.items(), key=lambda kv: -kv[1])[:12]:
            out.append("    %5.1f%%  %s" % (100.0 * c / n, k))
        out.append("  inclusive below it (named functions):")
        shown = 0
        for k, c in sorted(inc.items(), key=lambda kv: -kv[1]):
            if k.startswith("0x"):
                continue
            out.append("    %5.1f%%  %s" % (100.0 * c / n, k))
            shown += 1
            if shown >= top:
                break
        out.append("")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the bench

def perf_start(env, name, pid=None):
    if not env.args.profile or not shutil.which("perf"):
        return None
    data = os.path.join(env.out, "perf-%s.data" % name)
    for f in (data, data + ".old"):
        if os.path.exists(f):
            os.unlink(f)
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-g", "-o", data]
    # without a pid: the postmaster (the backends it forks from now on inherit the
    # counters) and the worker; not -a, which would sample other people's work too
    cmd += ["-p", str(pid) if pid else "%d,%d" % (env.postmaster_pid(), env.worker_pid())]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return (p, name, data, pid)


def perf_stop(env, h):
    if h is None:
        return
    p, name, data, pid = h
    p.send_signal(signal.SIGINT)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    txt = os.path.join(env.out, "perf-%s.txt" % name)
    with open(txt, "w") as f:
        base = ["perf", "report", "-i", data, "--stdio", "--no-header"]
        f.write("### by process (comm, pid)\n")
        f.flush()
        subprocess.run(base + ["--no-children", "-g", "none", "--sort", "comm,pid",
                               "--percent-limit", "1"], stdout=f, stderr=subprocess.DEVNULL)
        wp = pid or env.worker_pid()
        f.write("\n### worker (pid %s): by shared object\n" % wp)
        f.flush()
        subprocess.run(base + ["--no-children", "-g", "none", "--pid", str(wp), "--sort", "dso",
                               "--percent-limit", "0.5"], stdout=f, stderr=subprocess.DEVNULL)
        f.write("\n### worker (pid %s): self time by symbol\n" % wp)
        f.flush()
        subprocess.run(base + ["--no-children", "-g", "none", "--pid", str(wp), "--sort",
                               "dso,sym", "--percent-limit", "0.5"], stdout=f,
                       stderr=subprocess.DEVNULL)
        f.write("\n### worker (pid %s): inclusive time by symbol\n" % wp)
        f.flush()
        subprocess.run(base + ["--children", "-g", "none", "--pid", str(wp), "--sort", "sym",
                               "--percent-limit", "2"], stdout=f, stderr=subprocess.DEVNULL)
        if pid is None:
            f.write("\n### all postgres processes: self time by symbol\n")
            f.flush()
            subprocess.run(base + ["--no-children", "-g", "none", "--comm", "postgres",
                                   "--sort", "dso,sym", "--percent-limit", "0.5"], stdout=f,
                           stderr=subprocess.DEVNULL)
            f.write("\n### all postgres processes: inclusive time by symbol\n")
            f.flush()
            subprocess.run(base + ["--children", "-g", "none", "--comm", "postgres",
                                   "--sort", "sym", "--percent-limit", "2"], stdout=f,
                           stderr=subprocess.DEVNULL)
        # where the time goes under the functions that matter, from the call chains
        roots = ["pgcb_worker_main", "pgcb_queue_claim", "pgcb_queue_write_back"]
        if pid is None:
            roots += ["PostgresMain", "callback_trigger", "pgcb_trigger_row_event",
                      "pgcb_trigger_stmt_fire", "pgcb_queue_insert", "outbox_trigger"]
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
        f.write("\n" + perf_under(script, roots))
    env.perf_files.append(txt)
    log("perf report: %s" % os.path.relpath(txt, env.repo))
