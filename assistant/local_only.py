"""Nothing leaves the machine: switch off the libraries' own calls home, and keep keys out of logs.

Gradio checks its version and sends telemetry (api.gradio.app) and huggingface_hub looks up
huggingface.co when they start, unless told not to by environment variables read at their import;
`keep_local()` sets them first, for every command (tests/test_no_network.py audits each one).
"""

from __future__ import annotations

import logging
import os
import re

__all__ = ["RedactKeys", "keep_local"]

# Forced: these only switch off calls to outside hosts, which no command of ours needs.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # Gradio's telemetry and version check
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}
# Defaults a user may override: models come from the local cache or a path, never fetched silently.
OFFLINE_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[^\s\"']+", re.IGNORECASE)


def keep_local() -> None:
    """Set the environment that stops Gradio and the Hugging Face libraries calling home.
    Call before they are imported (they read it at import)."""
    os.environ.update(OFFLINE_ENV)
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def redact(text: str) -> str:
    """`text` with API keys (`?api_key=...`, `Bearer ...`) replaced by `***`."""
    return _BEARER.sub(r"\1***", _KEY_IN_URL.sub(r"\1***", text))


class RedactKeys(logging.Filter):
    """A logging filter that takes API keys out of a record's message (uvicorn logs request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
