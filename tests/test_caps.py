"""The streams' caps are declared once, beside the keys, and reach the scripts as ARGV."""

import re

from ticker import aggregator, merge, reseed


def test_capped_xadds_in_the_commit_scripts_take_their_cap_from_argv() -> None:
    """No commit script writes a number of its own after MAXLEN."""
    scripts = [aggregator.COMMIT, merge.COMMIT, reseed.RESEED]
    caps = [m for s in scripts for m in re.findall(r"'MAXLEN', '~', ([^,]+),", s)]
    assert caps and all(cap.startswith("ARGV[") for cap in caps), caps
