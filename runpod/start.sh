#!/usr/bin/env bash
# The GPU image's entrypoint: fetch what the config's models need into the volume, start coturn so browsers
# behind any NAT reach the pod over one TCP port, then run the command (the server by default).
#   runpod/start.sh                          voice-agent serve --config "$AGENT_CONFIG_FILE" --host 0.0.0.0 --port "$PORT"
#   runpod/start.sh some command ...         the same preparation, then that command
# The server loads and warms every model before GET /ready turns 200 (503 until then).
#
# Environment (all optional):
#   HF_TOKEN             Hugging Face token for gated weights (Voxtral's licence must be accepted on the hub)
#   MODEL_CACHE_DIR      where weights live (default /workspace/voice-agent-cache, the pod's volume)
#   AGENT_CONFIG_FILE   config file (default config/gpu.yaml); PORT the HTTP port (default 8000)
#   TURN_PORT            coturn's port inside the pod, TCP and UDP (default 3478; "off" runs no coturn)
#   TURN_USERNAME, TURN_PASSWORD   its static user (default voice / a random password, new at each start)
#   TURN_PUBLIC_HOST     the address browsers reach coturn at (default RunPod's RUNPOD_PUBLIC_IP)
#   TURN_PUBLIC_PORT     the public port mapped to TURN_PORT (default RunPod's RUNPOD_TCP_PORT_<TURN_PORT>)
#   TURN_TLS_CERT, TURN_TLS_KEY    PEM files: coturn also speaks TLS on TURN_PORT and the page is given turns:
# The page learns the TURN server through VOICE_AGENT_SERVER__PAGE_ICE_SERVERS (set here unless already set).
# Every other VOICE_AGENT_* variable overrides the config as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODEL_CACHE_DIR="${MODEL_CACHE_DIR:-/workspace/voice-agent-cache}"
config="${AGENT_CONFIG_FILE:-config/gpu.yaml}"
python=.venv/bin/python
[[ -x $python ]] || python=python3
mkdir -p "$MODEL_CACHE_DIR"

# Weights: download_models.py fetches only what is missing; then the server reads the volume offline.
if [[ ${HF_HUB_OFFLINE:-0} != 1 ]]; then
    "$python" scripts/download_models.py --config "$config"
fi
export HF_HUB_OFFLINE=1

turn_port="${TURN_PORT:-3478}"
if [[ $turn_port != off ]]; then
    turn_user="${TURN_USERNAME:-voice}"
    turn_password="${TURN_PASSWORD:-$("$python" -c 'import secrets; print(secrets.token_urlsafe(18))')}"
    public_port_var="RUNPOD_TCP_PORT_${turn_port}"
    public_host="${TURN_PUBLIC_HOST:-${RUNPOD_PUBLIC_IP:-}}"
    public_port="${TURN_PUBLIC_PORT:-${!public_port_var:-}}"
    args=(-c runpod/turnserver.conf --listening-port "$turn_port" --user "$turn_user:$turn_password"
          --pidfile /tmp/turnserver.pid --db /tmp/turndb)
    # The relay reaches only this pod's own addresses, where the voice agent's host candidates are.
    addresses=$(hostname -I)
    [[ -n $addresses ]] || echo "start.sh: hostname -I found no address; coturn can relay to nothing" >&2
    for address in $addresses; do args+=("--allowed-peer-ip=$address"); done
    scheme=turn
    if [[ -n ${TURN_TLS_CERT:-} && -n ${TURN_TLS_KEY:-} ]]; then
        args+=(--cert "$TURN_TLS_CERT" --pkey "$TURN_TLS_KEY" --no-dtls)
        scheme=turns
    else
        args+=(--no-tls --no-dtls)
    fi
    turnserver "${args[@]}" > /tmp/turnserver.log 2>&1 &
    echo "start.sh: coturn on port $turn_port (TCP+UDP), log /tmp/turnserver.log" >&2
    if [[ -n $public_host && -n $public_port ]]; then
        if [[ -z ${VOICE_AGENT_SERVER__PAGE_ICE_SERVERS:-} ]]; then
            VOICE_AGENT_SERVER__PAGE_ICE_SERVERS="$("$python" -c 'import json, sys
print(json.dumps([{"urls": f"{sys.argv[1]}:{sys.argv[2]}:{sys.argv[3]}?transport=tcp",
                   "username": sys.argv[4], "credential": sys.argv[5]}]))' \
                "$scheme" "$public_host" "$public_port" "$turn_user" "$turn_password")"
            export VOICE_AGENT_SERVER__PAGE_ICE_SERVERS
        fi
        echo "start.sh: the page relays through $scheme:$public_host:$public_port?transport=tcp" >&2
    else
        echo "start.sh: no public address for coturn (set TURN_PUBLIC_HOST and TURN_PUBLIC_PORT, or expose" \
             "TCP port $turn_port on a RunPod pod with a public IP); the page gets no TURN server" >&2
    fi
fi

if (( $# )); then
    exec "$@"
fi
exec .venv/bin/voice-agent serve --config "$config" --host 0.0.0.0 --port "${PORT:-8000}"
