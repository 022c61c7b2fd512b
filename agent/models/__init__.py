"""Model interfaces, the embedded backends, and the runtime that shares them between sessions."""
