"""The development stack: free ports, PostgreSQL and Redis found or started, the platform's
processes run and stopped, scratch databases and keys; for scripts/run and scripts/test (through
scripts/stores.py), the benchmark (bench/) and the integration tests."""
