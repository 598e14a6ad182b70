"""The measured parts, one file each.  Each module has run(env) -> dict
(stored in results["parts"][name]) and rows(res) -> table rows
(figure, value, target, baseline, verdict) for the printed table."""
