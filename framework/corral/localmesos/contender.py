"""One master's candidacy in ZooKeeper, in a process of its own so it can die like one.

``python -m corral.localmesos.contender HOSTS PATH SESSION_TIMEOUT`` reads the master's
MasterInfo (one JSON line) from stdin, creates the EPHEMERAL|SEQUENTIAL child
``PATH/json.info_<10 digits>`` holding it (what a Mesos master's contender writes; the
lowest sequence number leads), prints ``node <name>`` and then holds the session:

* stdin closes (localmesos stops the master, or exits): the session is closed and the
  node goes at once;
* the process is SIGKILLed (``corral localmesos fail-master``): nothing is closed, so the
  node goes only when ZooKeeper expires the session, after the session timeout — exactly
  what a crashed Mesos master leaves behind;
* the session is lost first (ZooKeeper unreachable too long): it exits with status 3 and
  its master must step down, as a Mesos master does ("Lost candidacy ... committing
  suicide!").

Errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import json
import os
import sys

from kazoo.client import KazooClient, KazooState

from corral.localmesos.zk import parse_zk_url

SESSION_LOST = 3


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: contender HOSTS PATH SESSION_TIMEOUT", file=sys.stderr)
        return 2
    hosts, path, timeout_text = argv
    try:
        timeout = float(timeout_text)
        parse_zk_url(f"zk://{hosts}{path}")
        info = json.loads(sys.stdin.buffer.readline())
        if not isinstance(info, dict):
            raise ValueError("MasterInfo must be a JSON object")
    except ValueError as e:
        print(f"contender: {e}", file=sys.stderr)
        return 2
    zk = KazooClient(hosts=hosts, timeout=timeout)
    stopping = False

    def on_state(state: str) -> None:
        if state == KazooState.LOST and not stopping:
            print("contender: ZooKeeper session lost", file=sys.stderr, flush=True)
            os._exit(SESSION_LOST)

    try:
        zk.start(timeout=max(10.0, timeout))
        zk.add_listener(on_state)
        node = zk.create(path.rstrip("/") + "/json.info_", json.dumps(info).encode(),
                         ephemeral=True, sequence=True, makepath=True)
    except Exception as e:  # unreachable ZooKeeper, bad path, ...
        print(f"contender: cannot register in ZooKeeper at {hosts}{path}: {e}",
              file=sys.stderr)
        return 2
    print(f"node {node.rsplit('/', 1)[-1]}", flush=True)
    sys.stdin.buffer.read()     # until our master stops (EOF); SIGKILL ends us earlier
    stopping = True
    zk.stop()
    zk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
