"""A wheel ships the configs: `pip install prefrun` (not editable) composes the same runs as a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_config(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("prefrun-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("prefrun/conf/")}
    expected = {
        f"prefrun/conf/{p.relative_to(ROOT / 'prefrun' / 'conf').as_posix()}"
        for p in (ROOT / "prefrun" / "conf").rglob("*.yaml")
    }
    assert expected and shipped == expected
