"""The committed generated code equals a fresh run of tools/generate_protocol.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATED = REPO_ROOT / "src" / "headwater" / "protocol" / "messages"
SPEC_DIR = REPO_ROOT / ".." / "shared" / "kafka-protocol" / "message"


def test_spec_dir_present() -> None:
    assert (SPEC_DIR / "ProduceRequest.json").is_file(), (
        f"Kafka message specs not found in {SPEC_DIR}"
    )


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "messages"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "generate_protocol.py"), "--out-dir", str(out)],
        check=True,
        cwd=REPO_ROOT,
    )
    fresh = {p.name: p.read_bytes() for p in sorted(out.glob("*.py"))}
    committed = {p.name: p.read_bytes() for p in sorted(GENERATED.glob("*.py"))}
    assert sorted(fresh) == sorted(committed), "generated file set differs; rerun the generator"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files (run tools/generate_protocol.py): {stale}"


def test_generated_files_carry_the_do_not_edit_header() -> None:
    for path in GENERATED.glob("*.py"):
        head = path.read_text(encoding="utf-8").splitlines()[:2]
        assert "tools/generate_protocol.py" in head[0]
        assert "DO NOT EDIT" in head[1]
