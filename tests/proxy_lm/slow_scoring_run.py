"""`python slow_scoring_run.py SECONDS <uprise score args>`: `uprise score` in this process,
each shard's LM work followed by a pause, so a test can kill it between shards."""

from __future__ import annotations

import sys
import time

import proxy_lm.scoring as scoring
from proxy_lm.cli import score_main


def main() -> None:
    pause, argv = float(sys.argv[1]), sys.argv[2:]
    compute = scoring.continuation_losses

    def slow(*args, **kwargs):
        out = compute(*args, **kwargs)
        time.sleep(pause)
        return out

    scoring.continuation_losses = slow
    score_main(argv)


if __name__ == "__main__":
    main()
