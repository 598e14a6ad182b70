"""What every part of the bench uses: the cluster and its neighbours (env),
CPU accounting (cpu), perf profiles (perf), small helpers (util) and the
report (report)."""
