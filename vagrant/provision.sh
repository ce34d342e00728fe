#!/usr/bin/env bash
# Provision one devcluster VM: ZooKeeper and a Mesos master, or a Mesos agent, plus Corral.
# Usage: provision.sh master IP | provision.sh agent IP MARKET
set -euo pipefail
ROLE=$1
IP=$2
MARKET=${3:-on-demand}
ZK="zk://192.168.56.10:2181/mesos"

apt-get update -qq
apt-get install -y -qq python3.11 python3.11-venv openjdk-11-jre-headless zookeeperd
# Mesos 1.11 packages are not in Ubuntu's archive; install them from the package source of
# your choice (e.g. a locally built .deb dropped into /vagrant/debs).
if ls /vagrant/debs/mesos_*.deb >/dev/null 2>&1; then
  apt-get install -y -qq /vagrant/debs/mesos_*.deb
fi

python3.11 -m venv /opt/corral
/opt/corral/bin/pip install -q /vagrant/..   # Corral itself: scheduler and executor

if [ "$ROLE" = master ]; then
  systemctl enable --now zookeeper
  mkdir -p /var/lib/mesos/master
  nohup mesos-master --ip="$IP" --zk="$ZK" --quorum=1 --work_dir=/var/lib/mesos/master \
    >/var/log/mesos-master.log 2>&1 &
else
  mkdir -p /var/lib/mesos/agent
  nohup mesos-agent --ip="$IP" --master="$ZK" --work_dir=/var/lib/mesos/agent \
    --attributes="market:$MARKET;zone:a" --resources="cpus:2;mem:3072;ports:[31000-32000]" \
    --oversubscribed_resources_interval=15secs \
    >/var/log/mesos-agent.log 2>&1 &
fi
