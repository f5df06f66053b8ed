"""The dashboard page: static files served by the gradwatch server."""

from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent
