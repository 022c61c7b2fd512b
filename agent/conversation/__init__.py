"""One conversation: its memory, its turns, and how a reply's text is cut into speakable phrases."""
