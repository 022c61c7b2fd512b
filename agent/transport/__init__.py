"""WebRTC edges: the peer connection's audio in and out, and the JSON event channel."""
