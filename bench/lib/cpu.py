"""CPU accounting from /proc: the worker, every other postgres process
(backends, auxiliary processes, and those that exited during the interval,
through the postmaster's cutime/cstime), nginx and the whole machine."""

import os
import time

CLK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def proc_cpu_s(pid):
    """utime + stime of one process, in seconds (0 if it is gone)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK if f else 0.0


def reaped_children_cpu_s(pid):
    """cutime + cstime: CPU of the children this process has waited for."""
    f = _stat_fields(pid)
    return (int(f[13]) + int(f[14])) / CLK if f else 0.0


def children_of(ppid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(int(d))
        if f and int(f[1]) == ppid:
            kids.append(int(d))
    return kids


def machine_cpu_s():
    """(busy, stolen, cores) over the online cores: busy counts stolen time
    too, the time the host ran something else while a vCPU had work."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    v = [int(x) for x in lines[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    cores = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return (sum(v[:8]) - idle) / CLK, (v[7] if len(v) > 7 else 0) / CLK, cores


def core_shares(d):
    """(busy, stolen) of an interval's delta as shares of all its cores'
    time: busy without the stolen part (the guest's own work), stolen
    apart.  (None, None) for an empty interval."""
    if not d["wall"] or not d["cores"]:
        return None, None
    whole = d["wall"] * d["cores"]
    return (d["machine"] - d["steal"]) / whole, d["steal"] / whole


class CpuMeter:
    """CPU seconds used over an interval: snap() before, snap() after,
    delta(a, b).  pg_all is every postgres process: the postmaster, its live
    children and those reaped in between (a child that exits mid-interval
    moves from the live sum into the postmaster's cutime, so the difference
    stays exact).  `exclude` pids (the bench's own monitoring session) are
    reported apart as "monitor" and left out of pg_other."""

    def __init__(self, env, exclude=()):
        self.env = env
        self.exclude = [p for p in exclude if p]

    def snap(self):
        pg = self.env.postmaster_pid()
        pg_kids = children_of(pg) if pg else []
        worker = self.env.worker_pid()
        ngx_master = self.env.nginx_master_pid()
        ngx = children_of(ngx_master) if ngx_master else []
        busy, steal, cores = machine_cpu_s()
        pg_all = sum(proc_cpu_s(p) for p in pg_kids)
        if pg:
            pg_all += proc_cpu_s(pg) + reaped_children_cpu_s(pg)
        return {
            "t": time.time(),
            "worker": proc_cpu_s(worker) if worker else 0.0,
            "monitor": sum(proc_cpu_s(p) for p in self.exclude),
            "pg_all": pg_all,
            "nginx": sum(proc_cpu_s(p) for p in ngx),
            "machine": busy,
            "steal": steal,
            "cores": cores,
        }

    @staticmethod
    def delta(a, b):
        d = {k: round(b[k] - a[k], 3) for k in a}
        d["wall"] = d.pop("t")
        d["cores"] = b["cores"]
        d["pg_other"] = round(d["pg_all"] - d["worker"] - d["monitor"], 3)
        return d
