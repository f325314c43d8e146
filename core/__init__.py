"""What every mock-comms process shares: settings, the lifecycle, Redis keys and time helpers."""
