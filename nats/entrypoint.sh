#!/bin/sh
# bosh-lab nats: writes /run/nats/nats.conf from the environment, then runs nats-server in the foreground.
#   NATS_USER / NATS_PASSWORD  the one user every client must present (default nats / nats)
#   NATS_DEBUG / NATS_TRACE    "true" logs debug lines / every protocol message (default false)
# Extra arguments are passed to nats-server. Logs go to stderr (the container log).
set -eu

: "${NATS_USER:=nats}"
: "${NATS_PASSWORD:=nats}"
: "${NATS_DEBUG:=false}"
: "${NATS_TRACE:=false}"

bool() {
  case "$1" in
    1|true|TRUE|True|yes|on) echo true ;;
    *) echo false ;;
  esac
}

# A value inside a double-quoted nats config string: escape backslash and double quote.
q() {
  printf '%s' "$1" | sed -e 's/[\\"]/\\&/g'
}

conf=/run/nats/nats.conf
mkdir -p /run/nats
umask 077
cat > "$conf" <<CONF
# Written by /usr/local/bin/nats-entrypoint at container start.
listen: 0.0.0.0:4222
# Monitoring (/varz /connz /subsz /healthz), unauthenticated: never publish it beyond the lab.
http: 0.0.0.0:8222
server_name: bosh-lab-nats

# One shared user, as in the 2013 deck's mbus URL nats://nats:nats@<host>:4222.
# Connections without it are refused.
authorization {
  user: "$(q "$NATS_USER")"
  password: "$(q "$NATS_PASSWORD")"
  timeout: 2
}

# 4 MiB messages (apply specs are a few KiB; leave headroom).
max_payload: 4194304
ping_interval: "20s"
ping_max: 3
write_deadline: "10s"

logtime: true
debug: $(bool "$NATS_DEBUG")
trace: $(bool "$NATS_TRACE")
CONF

echo "nats-entrypoint: user '$NATS_USER', clients on :4222, monitoring on :8222" >&2
exec /usr/sbin/nats-server -c "$conf" "$@"
