"""A job for the policy end-to-end tests, run under Corral's executor.

The master reports a large backlog through the SDK when ``REPORT_LOAD=1`` (the policy then
wants the job at its maximum); workers idle, using almost no CPU and little memory, and
checkpoint every 0.3 s only if their index is listed in ``CKPT_INDEXES`` (so the tests
know which workers lose least). Every task exits on SIGTERM and after ``RUN_SECONDS``.
"""

from __future__ import annotations

import os
import sys
import time

from corral_executor import sdk


def main() -> int:
    sdk.on_terminate(lambda: None)
    deadline = time.monotonic() + float(os.environ.get("RUN_SECONDS", "180"))
    if os.environ.get("CORRAL_TASK_ROLE") == "master":
        done = 0
        while time.monotonic() < deadline:
            if os.environ.get("REPORT_LOAD") == "1":
                done += 1
                sdk.report_progress(done, 10**6, backlog=10**6 - done)
            time.sleep(0.5)
        return 0
    index = os.environ.get("CORRAL_WORKER_INDEX", "")
    keeps_checkpointing = index in os.environ.get("CKPT_INDEXES", "").split(",")
    n = 0
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if keeps_checkpointing:
            n += 1
            sdk.checkpoint({"n": n})
    return 0


if __name__ == "__main__":
    sys.exit(main())
