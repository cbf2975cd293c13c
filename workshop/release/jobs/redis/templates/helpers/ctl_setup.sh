# Sets up the environment and directories for a ctl script; keeps the ctl script short.
# Usage: source /var/vcap/jobs/<job>/helpers/ctl_setup.sh <job> [<output label>]

set -e  # exit on the first failing command
set -u  # fail on unset variables

JOB_NAME=$1
output_label=${2:-$JOB_NAME}

export JOB_DIR=/var/vcap/jobs/$JOB_NAME
export RUN_DIR=/var/vcap/sys/run/$JOB_NAME
export LOG_DIR=/var/vcap/sys/log/$JOB_NAME
export TMP_DIR=/var/vcap/sys/tmp/$JOB_NAME
export STORE_DIR=/var/vcap/store/$JOB_NAME
export PIDFILE=$RUN_DIR/$output_label.pid

source "$JOB_DIR/helpers/ctl_utils.sh"
redirect_output "$output_label"

# monit starts programs with a minimal environment: set everything this job needs here.
export HOME=${HOME:-/home/vcap}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
for package_bin_dir in /var/vcap/packages/*/bin; do
  if [ -d "$package_bin_dir" ]; then
    PATH=$package_bin_dir:$PATH
  fi
done
export TMPDIR=$TMP_DIR

# Run the job as vcap (as stemcells do) when the user and chpst (runit) exist, else as root.
if id vcap >/dev/null 2>&1 && command -v chpst >/dev/null 2>&1; then
  export JOB_USER=vcap
  AS_JOB_USER="chpst -u vcap:vcap"
else
  export JOB_USER=root
  AS_JOB_USER=""
fi

for dir in "$RUN_DIR" "$LOG_DIR" "$TMP_DIR" "$STORE_DIR"; do
  mkdir -p "$dir"
  chown "$JOB_USER:$JOB_USER" "$dir"
  chmod 775 "$dir"
done

if [ -f "$JOB_DIR/data/properties.sh" ]; then
  source "$JOB_DIR/data/properties.sh"
fi
