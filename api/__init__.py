"""The HTTP face of mock-comms: REST, server-sent events and WebSocket on aiohttp."""
