"""A tiny custom executor written from docs/executor-http-api.md, stdlib only.

It subscribes to ``MESOS_AGENT_ENDPOINT`` (with its ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``
when the agent gives one), dumps its environment to ``env.json`` in the
sandbox, and reacts to events: LAUNCH → TASK_RUNNING (or, if the task's ``data`` decodes to
``fail``, exits 3; ``finish`` → TASK_FINISHED), KILL → TASK_KILLED, MESSAGE → echoes the
data back with a MESSAGE call, SHUTDOWN → exit 0. Every ACKNOWLEDGED uuid is logged to
``acks.txt``. Tests copy this file into a temp dir and run it with the test's Python.
"""

import base64
import http.client
import json
import os
import sys
import uuid

HOST, PORT = os.environ["MESOS_AGENT_ENDPOINT"].split(":")
FW = os.environ["MESOS_FRAMEWORK_ID"]
EX = os.environ["MESOS_EXECUTOR_ID"]
SANDBOX = os.environ["MESOS_SANDBOX"]
# Executor authentication: the agent's token goes with every call (as Mesos' library does).
TOKEN = os.environ.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN")
AUTH = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}

with open(os.path.join(SANDBOX, "env.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith(("MESOS_", "MY_"))}, f)


def call(body):
    body.update({"framework_id": {"value": FW}, "executor_id": {"value": EX}})
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=10)
    conn.request("POST", "/api/v1/executor", json.dumps(body),
                 {"Content-Type": "application/json", **AUTH})
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def update(task_id, state):
    return call({"type": "UPDATE", "update": {"status": {
        "task_id": task_id, "state": state, "source": "SOURCE_EXECUTOR",
        "uuid": base64.b64encode(uuid.uuid4().bytes).decode()}}})


conn = http.client.HTTPConnection(HOST, int(PORT), timeout=60)
conn.request("POST", "/api/v1/executor", json.dumps({
    "type": "SUBSCRIBE", "framework_id": {"value": FW}, "executor_id": {"value": EX},
    "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []}}),
    {"Content-Type": "application/json", "Accept": "application/json", **AUTH})
resp = conn.getresponse()
assert resp.status == 200, resp.status
while True:
    line = resp.readline()
    if not line:
        sys.exit(0)
    ev = json.loads(resp.read(int(line)))
    kind = ev["type"]
    if kind == "LAUNCH":
        task = ev["launch"]["task"]
        data = base64.b64decode(task.get("data", "")).decode()
        if data == "fail":
            sys.exit(3)
        update(task["task_id"], "TASK_RUNNING")
        if data == "finish":
            update(task["task_id"], "TASK_FINISHED")
    elif kind == "KILL":
        update(ev["kill"]["task_id"], "TASK_KILLED")
    elif kind == "MESSAGE":
        call({"type": "MESSAGE", "message": {"data": ev["message"]["data"]}})
    elif kind == "ACKNOWLEDGED":
        with open(os.path.join(SANDBOX, "acks.txt"), "a") as f:
            f.write(ev["acknowledged"]["uuid"] + "\n")
    elif kind == "SHUTDOWN":
        sys.exit(0)
