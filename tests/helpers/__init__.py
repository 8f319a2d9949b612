"""Support code for the tests that run real child processes (see store_worker.py)."""
