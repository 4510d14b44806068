#!/usr/bin/env bash
# Remove peersync for the current user (Linux or macOS): stop and unregister the service,
# delete the virtual environment and the ~/.local/bin/peersync link.
#
#   uninstall.sh [--venv DIR]
#
# The state folder (identity, keys, indexes, versions) and the stores' folders are kept:
# installing again picks up where it left off. Delete the state folder yourself to forget them.
set -euo pipefail

die() {
    echo "uninstall.sh: $*" >&2
    exit 2
}

venv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv)
            [[ $# -ge 2 ]] || die "--venv needs a value"
            venv=$2
            shift 2
            ;;
        -h | --help)
            sed -n '2,8s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            die "unknown option $1 (see --help)"
            ;;
    esac
done

if [[ $(id -u) -eq 0 && -n "${SUDO_USER:-}" ]]; then
    die "this removes peersync for the user who runs it; run it as $SUDO_USER, without sudo"
fi

case "$(uname -s)" in
    Darwin)
        data_dir="$HOME/Library/Application Support/peersync"
        registration="$HOME/Library/LaunchAgents/net.peersync.agent.plist"
        ;;
    *)
        data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/peersync"
        registration="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/peersync.service"
        ;;
esac
venv=${venv:-$data_dir/venv}

if [[ -x "$venv/bin/peersync" ]] && "$venv/bin/peersync" service uninstall; then
    :
elif [[ -e "$registration" ]]; then
    # The program is gone or broken: remove the registration by hand.
    echo "Removing $registration"
    case "$(uname -s)" in
        Darwin)
            launchctl bootout "gui/$(id -u)/net.peersync.agent" || true
            rm -f "$registration"
            ;;
        *)
            systemctl --user disable --now peersync.service || true
            rm -f "$registration"
            systemctl --user daemon-reload || true
            ;;
    esac
fi

link="$HOME/.local/bin/peersync"
if [[ -L "$link" && "$(readlink "$link")" == "$venv/bin/peersync" ]]; then
    rm -f "$link"
fi
if [[ -d "$venv" ]]; then
    echo "Removing $venv"
    rm -rf "$venv"
fi
echo "peersync is uninstalled. Data and keys are kept in ${PEERSYNC_HOME:-$data_dir}."
