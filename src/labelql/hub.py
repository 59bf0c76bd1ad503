"""Talking to the Hugging Face Hub (datasets, open_clip and sentence-transformers weights) or not.

With no network the hub clients retry for about 25 seconds and print a page of warnings before they
fail. LabelQL asks once whether the hub answers at all; if not, it switches the clients to offline mode,
so anything already in the local cache still loads and everything else fails at once, in one line.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers at all (already-offline settings count as no)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def go_offline() -> None:
    """Switch the hub clients to their offline mode, also when they were imported already."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    # The switches are read at import time; flip them in modules already loaded too.
    for mod_name, attrs in (
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
    ):
        mod = sys.modules.get(mod_name)
        for attr in attrs:
            if mod is not None and hasattr(mod, attr):
                setattr(mod, attr, True)


def ensure_mode() -> bool:
    """Go offline unless the hub answers; return whether it does."""
    online = hub_reachable()
    if not online:
        go_offline()
    return online
