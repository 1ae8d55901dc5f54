"""The chat app: one room per URL, every message to everyone in the room, the last ones stored."""
