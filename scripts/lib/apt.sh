# Sourced by scripts/setup.d/*.sh: install Debian packages (as root) when some are missing.
# Usage: apt_install_missing PKG...   (no arguments: nothing to do)
apt_install_missing() {
    (($#)) || return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    else
        echo "missing: $* (run as root, or install them)" >&2
        return 1
    fi
}
