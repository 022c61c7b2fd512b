"""Say a WAV file to a running agent server; same as ``voice-agent talk``."""

import sys

from agent.client.talk import main

if __name__ == "__main__":
    sys.exit(main())
