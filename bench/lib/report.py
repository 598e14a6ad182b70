"""The report: the printed table (one line per figure, from each part's
rows()), results.md (that table, plus the trigger part's tables per
synchronous_commit setting with the targets beside the figures), results.json
and bench.png (drain curve, latency distribution, keeping up)."""

import json
import os
import sys
import time

from parts import drain, instructions, latency, trigger

ORDER = ["drain", "trigger", "keepup", "latency", "metrics", "batch", "scaleout", "amqp", "instructions",
         "stream"]


def table(parts, modules):
    rows = []
    for name in ORDER:
        if name in parts:
            rows += modules[name].rows(parts[name])
    head = ("figure", "pg_callback", "target", "baseline (issue)", "")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    sep = "+-" + "-+-".join("-" * x for x in w) + "-+"
    lines = [sep, "| " + " | ".join(str(head[i]).ljust(w[i]) for i in range(5)) + " |", sep]
    for r in rows:
        lines.append("| " + " | ".join(
            (str(r[i]).rjust(w[i]) if i == 1 else str(r[i]).ljust(w[i])) for i in range(5)) + " |")
    lines.append(sep)
    return "\n".join(lines)


def plot(env):
    try:
        import matplotlib
    except ImportError:
        print("   no matplotlib (python3-matplotlib): no bench.png")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    P = env.results["parts"]
    panels = [p for p in ("drain", "latency", "keepup") if p in P]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6))
    if len(panels) == 1:
        axes = [axes]
    for ax, p in zip(axes, panels):
        if p == "drain":
            d = P["drain"]
            for i, run in enumerate(d["runs"]):
                xs = [c[0] for c in run["curve"]]
                ys = [c[1] for c in run["curve"]]
                ax.plot(xs, ys, label="run %d: %s/s" % (i + 1, format(int(run["per_s"] or 0), ",")))
            tmax = max(run["curve"][-1][0] for run in d["runs"])
            if d["wrk_per_s"]:
                tt = min(tmax, d["events"] / d["wrk_per_s"])
                ax.plot([0, tt], [0, d["wrk_per_s"] * tt], "k:", label="nginx raw (wrk) %s/s"
                        % format(int(d["wrk_per_s"]), ","))
            tt = min(tmax, d["events"] / drain.GOAL["per_s"])
            ax.plot([0, tt], [0, drain.GOAL["per_s"] * tt], "r--", lw=0.8, label="target 20,000/s")
            ax.set_xlabel("seconds after resume_endpoint()")
            ax.set_ylabel("deliveries answered")
            ax.set_title("1. Drain of %s signed events" % format(d["events"], ","))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        elif p == "latency":
            L = P["latency"]
            allx = sorted(x for run in L["runs"] for x in run["samples_ms"])
            if allx:
                ys = [(i + 1) / len(allx) for i in range(len(allx))]
                ax.plot(allx, ys, drawstyle="steps-post", label="all runs (%d commits)" % len(allx))
                ax.axvline(L["p50_ms"], color="g", ls=":", label="p50 %.2f ms" % L["p50_ms"])
                ax.axvline(L["p99_ms"], color="m", ls=":", label="p99 %.2f ms" % L["p99_ms"])
                ax.axvline(latency.TARGET["p50_ms"], color="r", ls="--", lw=0.8, label="targets 2 / 20 ms")
                ax.axvline(latency.TARGET["p99_ms"], color="r", ls="--", lw=0.8)
                if min(allx) > 0:
                    ax.set_xscale("log")
            ax.set_xlabel("commit-to-arrival (ms)")
            ax.set_ylabel("fraction of commits")
            ax.set_title("4. Latency, commits 20 ms apart")
            ax.legend(fontsize=8, loc="lower right")
            ax.grid(alpha=0.3, which="both")
        elif p == "keepup":
            k = P["keepup"]
            runs = sorted(k["runs"], key=lambda x: x["backlog"])
            run = runs[len(runs) // 2]
            if run["samples"]:
                xs = [s[0] for s in run["samples"]]
                ax.plot(xs, [s[1] for s in run["samples"]], label="enqueued")
                ax.plot(xs, [s[2] for s in run["samples"]], label="delivered (answered)")
                ax.axvline(k["seconds"], color="k", ls=":", lw=0.8, label="pgbench ends")
            ax.set_xlabel("seconds")
            ax.set_ylabel("events")
            ax.set_title("3. Keeping up: %.0f inserts/s with the trigger" % (run["tps"] or 0))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("pg_callback bench%s - %s" % (" (quick)" if env.quick else "",
                                               env.machine_line()[:150]), fontsize=8)
    fig.tight_layout()
    path = os.path.join(env.out, "bench.png")
    fig.savefig(path, dpi=110)
    return path


def given_options():
    """The options bench.py was run with, as run.sh passed them (its own
    --tmp and --repo left out): what a result file was measured with."""
    out, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--tmp", "--repo"):
            skip = True
        elif not arg.startswith(("--tmp=", "--repo=")):
            out.append(arg)
    return "".join(" " + a for a in out)


def write(env, modules):
    res = env.results
    parts = res["parts"]
    tab = table(parts, modules)
    res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["load_after"] = os.getloadavg()
    res["table"] = tab.splitlines()
    res["perf_reports"] = [os.path.relpath(p, env.repo) for p in env.perf_files]
    with open(os.path.join(env.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    png = plot(env)
    tables_md = trigger.markdown(parts["trigger"]) if "trigger" in parts else []
    if "instructions" in parts:
        tables_md += instructions.markdown(parts["instructions"])
    load = "Load average before / after: %s / %s." % (
        " ".join("%.2f" % x for x in res["machine"]["load_before"]),
        " ".join("%.2f" % x for x in res["load_after"]))
    md = ["# pg_callback benchmark results", "",
          "`bash bench/run.sh%s`, %s, median of %d run%s (the trigger part: of its rounds; "
          "the stream part: one stream per setting, its 10 s windows)." % (
              given_options(), res["finished_at"], env.runs,
              "s" if env.runs > 1 else ""), "",
          "pg_callback %s at commit %s%s." % (
              res.get("extension_version", "?"), res["machine"]["pg_callback_commit"],
              ", the build already installed (--no-build)" if env.args.no_build
              else ", built and installed by run.sh"), "",
          "Machine: " + env.machine_line() + ".", "",
          "PostgreSQL programs from %s." % res["machine"]["pg_bin"], "",
          load, "",
          "```", tab, "```", ""]
    md += tables_md
    if png:
        md += ["![drain curve, keeping up and latency distribution](bench.png)", ""]
    with open(os.path.join(env.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print()
    print("pg_callback bench%s - median of %d run%s" % (" (quick)" if env.quick else "", env.runs,
                                                       "s" if env.runs > 1 else ""))
    print("machine: " + env.machine_line())
    print(load + " (other work on the machine skews the absolute figures; alternated ratios less)")
    print(tab)
    if tables_md:
        print()
        print("\n".join(tables_md))
    print("written: bench/out/results.json, bench/out/results.md" + (", bench/out/bench.png" if png else ""))
