#!/usr/bin/env bash
# Provision one devcluster VM (Ubuntu 24.04 "noble"):
#   provision.sh master IP         ZooKeeper, mesos-master (clusterd), Corral's scheduler
#   provision.sh agent IP MARKET   mesos-agent (clusterd) with market:MARKET, and Corral
# Mesos and ZooKeeper come from AVENTER's apt repository, pinned by version below; see
# README.md for what to do when AVENTER's signing key has expired.
set -euo pipefail

ROLE=${1:?"usage: provision.sh master IP, or provision.sh agent IP MARKET"}
IP=${2:?"the private IP of this VM"}
MARKET=${3:-on-demand}
MASTER_IP=192.168.56.10
ZK_URL="zk://${MASTER_IP}:2181/mesos"

AVENTER_REPO=https://rpm.aventer.biz/Ubuntu/noble
AVENTER_KEY_URL=https://www.aventer.biz/assets/support_aventer.asc
MESOS_VERSION=1.11.0-0.7.1.ubuntu2404   # package aventer-mesos (clusterd, Mesos 1.11 API)
ZOOKEEPER_VERSION=3.9.4-0.1             # package zookeeper, from the same repository
KEYRING=/etc/apt/keyrings/support_aventer.asc

export DEBIAN_FRONTEND=noninteractive
log() { echo "provision[$ROLE]: $*"; }

# --- packages ---------------------------------------------------------------------------
apt-get update -qq
apt-get install -y -qq ca-certificates curl gnupg python3-venv openjdk-17-jre-headless

install -d -m 0755 /etc/apt/keyrings
curl -fsSL "$AVENTER_KEY_URL" -o "$KEYRING.new"
log "AVENTER signing key (check its 'expires' date):"
gpg --show-keys "$KEYRING.new" || true
mv "$KEYRING.new" "$KEYRING"
echo "deb [signed-by=$KEYRING] $AVENTER_REPO noble main" > /etc/apt/sources.list.d/aventer.list
# The two packages at exactly these versions; anything else AVENTER has yields to Ubuntu.
cat > /etc/apt/preferences.d/aventer <<EOF
Package: *
Pin: origin rpm.aventer.biz
Pin-Priority: 100

Package: aventer-mesos
Pin: version $MESOS_VERSION
Pin-Priority: 1001

Package: zookeeper
Pin: version $ZOOKEEPER_VERSION
Pin-Priority: 1001
EOF
if ! apt-get update -qq 2> /tmp/apt-update.err \
    || grep -Eq "EXPKEYSIG|KEYEXPIRED|NO_PUBKEY|BADSIG|is not signed" /tmp/apt-update.err; then
  cat /tmp/apt-update.err >&2
  log "apt cannot use AVENTER's repository (an expired or changed signing key shows as" \
      "EXPKEYSIG/KEYEXPIRED/NO_PUBKEY above): see 'When AVENTER's signing key expires'" \
      "in vagrant/README.md" >&2
  exit 1
fi

packages=("aventer-mesos=$MESOS_VERSION")
[ "$ROLE" = master ] && packages+=("zookeeper=$ZOOKEEPER_VERSION")
apt-get install -y -qq "${packages[@]}"
apt-mark hold aventer-mesos >/dev/null
if [ "$ROLE" = master ]; then apt-mark hold zookeeper >/dev/null; fi
mesos-master --version || true
# Flags come from /etc/default/mesos-{master,agent} only (as in AVENTER's mesos-mini image).
rm -f /etc/mesos-master/work_dir
rm -rf /etc/mesos-agent /etc/mesos-slave

# --- Corral, from the shared checkout -----------------------------------------------------
python3 -m venv /opt/corral/venv
/opt/corral/venv/bin/pip install -q --upgrade pip
if [ "$ROLE" = master ]; then
  /opt/corral/venv/bin/pip install -q "/corral[test]"   # the e2e suite runs from here
else
  /opt/corral/venv/bin/pip install -q /corral           # the job samples (and numpy)
fi
ln -sf /opt/corral/venv/bin/corral /usr/local/bin/corral

install -d -m 0755 /etc/mesos
echo "$ZK_URL" > /etc/mesos/zk

# --- master: ZooKeeper, mesos-master with framework authentication, corral scheduler ----
if [ "$ROLE" = master ]; then
  install -d -m 0755 /etc/zookeeper/conf /var/lib/zookeeper
  cat > /etc/zookeeper/conf/zoo.cfg <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=/var/lib/zookeeper
clientPort=2181
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
EOF
  if id zookeeper >/dev/null 2>&1; then chown -R zookeeper: /var/lib/zookeeper; fi

  # One principal for Corral; the secret stays on this VM (0600, root only).
  install -d -m 0700 /etc/corral
  if [ ! -s /etc/corral/secret ]; then
    head -c 24 /dev/urandom | base64 | tr -d '/+=' > /etc/corral/secret
  fi
  chmod 0600 /etc/corral/secret
  secret=$(cat /etc/corral/secret)
  printf '{"credentials": [{"principal": "corral", "secret": "%s"}]}\n' "$secret" \
    > /etc/mesos/credentials.json
  chmod 0600 /etc/mesos/credentials.json

  cat > /etc/default/mesos-master <<EOF
MESOS_IP=$IP
MESOS_HOSTNAME=$IP
MESOS_ZK=file:///etc/mesos/zk
MESOS_QUORUM=1
MESOS_CLUSTER=corral-devcluster
MESOS_WORK_DIR=/var/lib/mesos/master
MESOS_WEBUI_DIR=/usr/share/mesos/webui
MESOS_CREDENTIALS=/etc/mesos/credentials.json
MESOS_AUTHENTICATE_HTTP_FRAMEWORKS=true
MESOS_HTTP_FRAMEWORK_AUTHENTICATORS=basic
EOF
  install -d -m 0755 /var/lib/mesos/master
  systemctl disable --now mesos-agent >/dev/null 2>&1 || true
  systemctl enable zookeeper mesos-master
  systemctl restart zookeeper
  systemctl restart mesos-master

  cat > /etc/systemd/system/corral-scheduler.service <<EOF
[Unit]
Description=Corral scheduler (framework "corral" on the devcluster)
After=network-online.target mesos-master.service

[Service]
ExecStart=/opt/corral/venv/bin/corral scheduler --master $ZK_URL --api 0.0.0.0:7070 \\
  --http 0.0.0.0:7071 --http-advertise http://$IP:7071 \\
  --principal corral --secret-file /etc/corral/secret
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
  systemctl daemon-reload
  systemctl enable --now corral-scheduler
  log "master up: http://$IP:5050 (Mesos), $IP:7070 (Corral API)"
  exit 0
fi

# --- agent ------------------------------------------------------------------------------
attributes="market:$MARKET;zone:a;host:$(hostname)"
[ "$MARKET" = spot ] && attributes="$attributes;spot:true"
cat > /etc/default/mesos-agent <<EOF
MESOS_IP=$IP
MESOS_HOSTNAME=$IP
MESOS_MASTER=zk://${MASTER_IP}:2181/mesos
MESOS_WORK_DIR=/var/lib/mesos/agent
MESOS_ATTRIBUTES=$attributes
MESOS_RESOURCES=cpus:2;mem:3072;disk:10000;ports:[31000-32000]
MESOS_SWITCH_USER=true
MESOS_FETCHER_CACHE_DIR=/var/lib/mesos/fetch
MESOS_CONTAINERIZERS=mesos
MESOS_LAUNCHER=linux
MESOS_ISOLATION=filesystem/linux,docker/runtime
MESOS_IMAGE_PROVIDERS=docker
MESOS_IMAGE_PROVISIONER_BACKEND=copy
MESOS_ENABLE_CGROUPSV2=true
EOF
# Executor authentication needs a clusterd built with TLS support: use it where it is.
if mesos-agent --help 2>&1 | grep -q -- "--authenticate_http_executors"; then
  install -d -m 0700 /etc/mesos/secrets
  [ -s /etc/mesos/secrets/jwt ] || head -c 32 /dev/urandom | base64 > /etc/mesos/secrets/jwt
  chmod 0600 /etc/mesos/secrets/jwt
  cat >> /etc/default/mesos-agent <<EOF
MESOS_AUTHENTICATE_HTTP_EXECUTORS=true
MESOS_JWT_SECRET_KEY=/etc/mesos/secrets/jwt
EOF
else
  log "this mesos-agent has no --authenticate_http_executors (built without TLS):" \
      "executors are not authenticated on this agent" >&2
fi
install -d -m 0755 /var/lib/mesos/agent /var/lib/mesos/fetch
systemctl disable --now mesos-master >/dev/null 2>&1 || true
systemctl enable mesos-agent
systemctl restart mesos-agent
log "agent up: $IP ($MARKET)"
