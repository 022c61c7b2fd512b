"""Audio formats and voice activity: everything between raw frames and a user turn."""
