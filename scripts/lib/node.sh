# Sourced by scripts/setup.d/*.sh: install Debian's node and npm when either is missing (fresh machine).
ensure_node() {
    local need_apt=()
    command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
    command -v npm >/dev/null 2>&1 || need_apt+=(npm)
    if ((${#need_apt[@]})); then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_apt[@]}"
    fi
}
