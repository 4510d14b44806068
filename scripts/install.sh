#!/usr/bin/env bash
# Install peersync for the current user (Linux or macOS, no root) and register its background service.
#
#   install.sh [--source SRC] [--store DIR --relay DIR [--name NAME] | --invite CODE --store DIR --relay DIR]
#              [--python PY] [--venv DIR] [--restart]
#
# It makes a virtual environment (Linux: ${XDG_DATA_HOME:-~/.local/share}/peersync/venv,
# macOS: ~/Library/Application Support/peersync/venv), pip-installs peersync from SRC into it,
# links ~/.local/bin/peersync, then runs `peersync service install` (a systemd user unit on
# Linux, a LaunchAgent on macOS) with the store options. Running it again changes nothing;
# when the install brought new code, the running service is restarted.
# Extra pip arguments (an internal index, --no-index --find-links DIR...) go in PEERSYNC_PIP_ARGS.
set -euo pipefail

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Where pip installs from when --source is not given: the folder the script sits in when it
# holds the project or a wheel, else the checkout the scripts/ folder belongs to.
default_source() {
    local wheel
    if [[ -f "$script_dir/pyproject.toml" ]]; then
        echo "$script_dir"
        return
    fi
    wheel=$(find "$script_dir" -maxdepth 1 -name 'peersync-*.whl' | sort | tail -n 1)
    if [[ -n "$wheel" ]]; then
        echo "$wheel"
    elif [[ -f "$script_dir/../pyproject.toml" ]]; then
        (cd "$script_dir/.." && pwd)
    fi
}

source_spec=""
store=""
relay=""
invite=""
name=""
python="python3"
venv=""
restart=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --source | --store | --relay | --invite | --name | --python | --venv)
            [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
            case "$1" in
                --source) source_spec=$2 ;;
                --store) store=$2 ;;
                --relay) relay=$2 ;;
                --invite) invite=$2 ;;
                --name) name=$2 ;;
                --python) python=$2 ;;
                --venv) venv=$2 ;;
            esac
            shift 2
            ;;
        --restart)
            restart=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die "unknown option $1 (see --help)"
            ;;
    esac
done

if [[ $(id -u) -eq 0 && -n "${SUDO_USER:-}" ]]; then
    die "this installs peersync for the user who runs it; run it as $SUDO_USER, without sudo"
fi
if [[ -n "$store$relay" && ( -z "$store" || -z "$relay" ) ]]; then
    die "--store and --relay go together"
fi
if [[ -n "$invite" && -z "$store" ]]; then
    die "--invite needs --store and --relay"
fi

case "$(uname -s)" in
    Darwin) data_dir="$HOME/Library/Application Support/peersync" ;;
    *) data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/peersync" ;;
esac
venv=${venv:-$data_dir/venv}
source_spec=${source_spec:-$(default_source)}
[[ -n "$source_spec" ]] || die "no peersync source next to this script; give --source DIR, WHEEL or a pip requirement"

command -v "$python" >/dev/null 2>&1 || die "$python not found; install Python 3.10 or later, or give --python PATH"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "Creating a virtual environment in $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

# A digest of the installed files (pip's RECORD), to restart the service only when the code changed.
installed_digest() {
    "$venv/bin/python" - <<'EOF'
import hashlib, importlib.metadata
try:
    record = importlib.metadata.distribution("peersync").read_text("RECORD") or ""
except importlib.metadata.PackageNotFoundError:
    record = ""
print(hashlib.sha256(record.encode()).hexdigest())
EOF
}

before=$(installed_digest)
pip_args=()
if [[ -n "${PEERSYNC_PIP_ARGS:-}" ]]; then
    read -r -a pip_args <<<"$PEERSYNC_PIP_ARGS"
fi
echo "Installing peersync from $source_spec"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${pip_args[@]+"${pip_args[@]}"} "$source_spec"
after=$(installed_digest)

# `peersync` on the user's PATH (most Linux desktops put ~/.local/bin there).
mkdir -p "$HOME/.local/bin"
if [[ ! -e "$HOME/.local/bin/peersync" || -L "$HOME/.local/bin/peersync" ]]; then
    if [[ "$(readlink "$HOME/.local/bin/peersync" || true)" != "$venv/bin/peersync" ]]; then
        ln -sfn "$venv/bin/peersync" "$HOME/.local/bin/peersync"
    fi
fi

service_args=(service install)
[[ -n "$store" ]] && service_args+=(--store "$store" --relay "$relay")
[[ -n "$invite" ]] && service_args+=(--invite "$invite")
[[ -n "$name" ]] && service_args+=(--name "$name")
if [[ $restart -eq 1 || "$before" != "$after" ]]; then
    service_args+=(--restart)
fi
"$venv/bin/peersync" "${service_args[@]}"
