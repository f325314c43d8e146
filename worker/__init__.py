"""RQ workers (non-forking): move due calls on and upload recordings, in batches."""
