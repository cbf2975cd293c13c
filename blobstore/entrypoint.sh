#!/bin/sh
# bosh-lab blobstore: writes nginx's basic-auth user files from the environment, makes the store writable
# for nginx's workers, then runs nginx in the foreground (daemon off in nginx.conf).
#   BLOBSTORE_DIRECTOR_USER / BLOBSTORE_DIRECTOR_PASSWORD  default director / director (GET HEAD PUT DELETE)
#   BLOBSTORE_AGENT_USER    / BLOBSTORE_AGENT_PASSWORD     default agent / agent       (GET HEAD PUT)
#   BLOBSTORE_WATCH_LOG_MAX   bytes the watch log (/var/log/blobstore/watch.log, one JSON line per blob request,
#                             which the director tails: docs/watch.md) may reach before it is emptied (16 MiB)
set -eu

: "${BLOBSTORE_DIRECTOR_USER:=director}"
: "${BLOBSTORE_DIRECTOR_PASSWORD:=director}"
: "${BLOBSTORE_AGENT_USER:=agent}"
: "${BLOBSTORE_AGENT_PASSWORD:=agent}"

for v in "$BLOBSTORE_DIRECTOR_USER" "$BLOBSTORE_AGENT_USER"; do
  case "$v" in
    ''|*[!A-Za-z0-9_.-]*) echo "blobstore-entrypoint: user name '$v' must be letters, digits, '_', '.' or '-'" >&2; exit 1 ;;
  esac
done

store=/var/vcap/store/blobstore
auth=/etc/nginx/blobstore
mkdir -p "$store/store" "$store/tmp" "$auth"

# nginx reads "{PLAIN}" passwords in auth_basic_user_file (the format BOSH's read_users/write_users use).
umask 027
printf '%s:{PLAIN}%s\n' \
  "$BLOBSTORE_DIRECTOR_USER" "$BLOBSTORE_DIRECTOR_PASSWORD" \
  "$BLOBSTORE_AGENT_USER" "$BLOBSTORE_AGENT_PASSWORD" > "$auth/users"
printf '%s:{PLAIN}%s\n' \
  "$BLOBSTORE_DIRECTOR_USER" "$BLOBSTORE_DIRECTOR_PASSWORD" > "$auth/director_users"
sed "s/@DIRECTOR_USER@/$BLOBSTORE_DIRECTOR_USER/" /etc/nginx/overwrite.conf.in > "$auth/overwrite.conf"
chown root:www-data "$auth" "$auth/users" "$auth/director_users" "$auth/overwrite.conf"
chmod 0750 "$auth"
chmod 0640 "$auth/users" "$auth/director_users" "$auth/overwrite.conf"

# A freshly created named volume is owned by root: nginx's workers (www-data) write blobs and temp files.
# (Only entries not owned by www-data are touched, so a big store costs one walk, not a rewrite.)
find "$store" ! -user www-data -exec chown www-data:www-data {} +
chmod 0750 "$store/store" "$store/tmp"

# The watch log lives in a volume the director reads. nginx appends (O_APPEND), so emptying the file in
# place is safe without a reopen; the director's tail notices the file got smaller and reads from its start.
: "${BLOBSTORE_WATCH_LOG_MAX:=16777216}"
watch_log=/var/log/blobstore/watch.log
mkdir -p /var/log/blobstore
touch "$watch_log"
chmod 0755 /var/log/blobstore
chmod 0644 "$watch_log"
(
  while sleep 10; do
    size=$(stat -c %s "$watch_log" 2>/dev/null || echo 0)
    if [ "$size" -gt "$BLOBSTORE_WATCH_LOG_MAX" ]; then
      : > "$watch_log"
      echo "blobstore-entrypoint: $watch_log reached $size bytes: emptied" >&2
    fi
  done
) &

echo "blobstore-entrypoint: DAV on :25250, users '$BLOBSTORE_DIRECTOR_USER' (read/write/delete)" \
     "and '$BLOBSTORE_AGENT_USER' (read/write)" >&2
nginx -t -q
exec nginx "$@"
