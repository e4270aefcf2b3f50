"""`python stalled_train_run.py STEP <uprise train args>`: `uprise train` in this process that
stops before training batch STEP + 1 (its checkpoint of step STEP written) and waits to be
killed, so a test can SIGKILL it at a known step."""

from __future__ import annotations

import sys
import time

from retriever.cli import train_main
from retriever.module import RetrieverModule


def main() -> None:
    stop, argv = int(sys.argv[1]), sys.argv[2:]
    start_batch = RetrieverModule.on_train_batch_start

    def stalled(self, batch, batch_idx):
        if self.global_step >= stop:
            time.sleep(3600)
        return start_batch(self, batch, batch_idx)

    RetrieverModule.on_train_batch_start = stalled
    train_main(argv)


if __name__ == "__main__":
    main()
