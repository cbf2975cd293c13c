#!/bin/sh
# bosh-lab nats: writes $NATS_AUTH_DIR/nats.conf, then runs nats-server in the foreground.
#
# Who may connect (as today's BOSH does, with passwords instead of certificates):
#   director   its own user, every subject (password generated at first start: $AUTH/director.password)
#   monitor    read-only: subscribe to every subject, publish to none (the director's `watch` tap;
#              password generated at first start: $AUTH/monitor.password)
#   operator   NATS_USER / NATS_PASSWORD, every subject: for people on the host (`nats sub '>'`); when
#              NATS_PASSWORD is empty a random one is generated at first start ($AUTH/operator.password)
#   agents     one user per VM, made by the director when it creates the VM: subscribe agent.<id> only,
#              publish director.> and hm.agent.*.<id> only. The director rewrites $AUTH/auth.conf and this
#              container reloads nats-server when it changes (nats/reload-on-change), as BOSH's nats-sync does.
# $AUTH is a volume shared with the director only; VMs never see it.
#   NATS_DEBUG / NATS_TRACE    "true" logs debug lines / every protocol message (default false)
# Extra arguments are passed to nats-server. Logs go to stderr (the container log).
set -eu

: "${NATS_USER:=nats}"
: "${NATS_PASSWORD:=}"
: "${NATS_DEBUG:=false}"
: "${NATS_TRACE:=false}"
: "${NATS_AUTH_DIR:=/var/vcap/nats-auth}"

bool() {
  case "$1" in
    1|true|TRUE|True|yes|on) echo true ;;
    *) echo false ;;
  esac
}

q() {
  printf '%s' "$1" | sed -e 's/[\\"]/\\&/g'
}

secret() {   # a random password, generated once and kept in the shared volume
  if [ ! -s "$1" ]; then
    (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$1.tmp" && mv "$1.tmp" "$1")
  fi
  cat "$1"
}

case "$NATS_USER" in
  ''|director|monitor|*[!A-Za-z0-9_.-]*) echo "nats-entrypoint: NATS_USER '$NATS_USER' must be a plain name other than 'director' and 'monitor'" >&2; exit 1 ;;
esac

mkdir -p /run/nats "$NATS_AUTH_DIR"
director_password=$(secret "$NATS_AUTH_DIR/director.password")
monitor_password=$(secret "$NATS_AUTH_DIR/monitor.password")
if [ -n "$NATS_PASSWORD" ]; then
  (umask 077; printf '%s' "$NATS_PASSWORD" > "$NATS_AUTH_DIR/operator.password")
fi
operator_password=$(secret "$NATS_AUTH_DIR/operator.password")
printf '%s' "$NATS_USER" > "$NATS_AUTH_DIR/operator.user"

# The users until the director writes its own file (the director keeps these three and adds the agents).
# An auth.conf of an older lab without the monitor user is written again (the director rewrites it anyway).
if [ ! -s "$NATS_AUTH_DIR/auth.conf" ] || ! grep -q '{user: "monitor"' "$NATS_AUTH_DIR/auth.conf"; then
  umask 077
  cat > "$NATS_AUTH_DIR/auth.conf" <<AUTH
authorization {
  timeout: 2
  users = [
    {user: "director", password: "$(q "$director_password")"}
    {user: "monitor", password: "$(q "$monitor_password")", permissions: {publish: {deny: [">"]}, subscribe: {allow: [">"]}}}
    {user: "$(q "$NATS_USER")", password: "$(q "$operator_password")"}
  ]
}
AUTH
fi

# Beside auth.conf: nats-server resolves an include relative to the including file.
conf=$NATS_AUTH_DIR/nats.conf
umask 077
cat > "$conf" <<CONF
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
server_name: bosh-lab-nats
pid_file: /run/nats/nats.pid

include "auth.conf"

max_payload: 4194304
ping_interval: "20s"
ping_max: 3
write_deadline: "10s"

logtime: true
debug: $(bool "$NATS_DEBUG")
trace: $(bool "$NATS_TRACE")
CONF

echo "nats-entrypoint: users 'director', 'monitor' (read-only), '$NATS_USER' and one per agent VM ($NATS_AUTH_DIR/auth.conf);" \
     "clients on :4222, monitoring on :8222" >&2
/usr/local/bin/nats-reload-on-change "$NATS_AUTH_DIR/auth.conf" /run/nats/nats.pid &
exec /usr/sbin/nats-server -c "$conf" "$@"
