"""Where the shipped configs live (the package's conf/; ./conf links here): read by the CLI and by preset lookups."""

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
