"""Route handlers: thin, each says what the HTTP layer does and calls into `calls/`."""
