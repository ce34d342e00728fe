#!/usr/bin/env bash
# Run Corral's end-to-end suite against the devcluster (on the master VM, as root):
#   vagrant ssh master -c 'sudo /corral/vagrant/run-e2e.sh [pytest args]'
# The tests start their own schedulers (framework "corral", principal corral) against the
# clusterd master; tests that need localmesos' fault injection are skipped by name.
set -euo pipefail
MASTER_IP=192.168.56.10
export CORRAL_E2E_MASTER="http://${MASTER_IP}:5050"
export CORRAL_E2E_SCHEDULER_ARGS="--principal corral --secret-file /etc/corral/secret \
--http 0.0.0.0:0 --http-advertise ${MASTER_IP}"
export CORRAL_E2E_WORKDIR=/corral/.e2e-work   # shared with the agents at the same path
export CORRAL_E2E_ZK="${MASTER_IP}:2181"      # the HA tests elect in the cluster's ZooKeeper
export CORRAL_E2E_TASK_PYTHON=/opt/corral/venv/bin/python
mkdir -p "$CORRAL_E2E_WORKDIR"
cd /corral
exec /opt/corral/venv/bin/python -m pytest -p no:cacheprovider -rs tests/e2e "$@"
