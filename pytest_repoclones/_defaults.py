"""Default time limits, in a module of their own: the settings read them at start-up without
importing what runs git or takes locks (a suite that never uses the plugin pays nothing)."""

from __future__ import annotations

__all__ = ["DEFAULT_LOCK_TIMEOUT", "DEFAULT_TIMEOUT"]

#: Time limit of each git network operation (seconds).
DEFAULT_TIMEOUT = 600.0
#: How long a session waits for another process holding a repository's lock (seconds).
DEFAULT_LOCK_TIMEOUT = 900.0
