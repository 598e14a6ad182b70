"""Part 2's tables again from a results.json, with the ratios and verdicts
recomputed from its rounds by the current code: a run measured before a
change to how rounds are read (the quiet brackets, the intervals) is read
the new way without measuring it again.

    /usr/bin/python3 bench/render_trigger.py bench/results/trigger-median-ci.json

Prints markdown; the figures each run measured (TPS, CPU, steal, the bulk
runs' seconds) are the file's, unchanged; every check is judged again."""

import json
import sys

from parts import trigger


def resummarize(t):
    """The single-row and fan-out summaries recomputed from their rounds;
    each setting's checks and verdicts from them."""
    for setting, s in trigger.ran(t):
        single = s.get("single")
        if single:
            trigger.summarize_single(single, [v for v in single if not v.startswith("_")])
        s["checks"] = trigger.judge(setting, single, s.get("bulk"), t["stmt_available"])
        s["meets"] = trigger.meets(setting, single, s.get("bulk"))
    fan = t.get("fanout", {}).get("single")
    if fan:
        trigger.summarize_single(fan, [v for v in fan if not v.startswith("_")])
    return t


def main(path):
    with open(path) as f:
        t = json.load(f)["parts"]["trigger"]
    print("\n".join(trigger.markdown(resummarize(t))))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: render_trigger.py RESULTS_JSON")
    main(sys.argv[1])
