"""The corpora of invalid baselines and examples, and the notes at the top of their files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[2]
INVALID = sorted((ROOT / "tests/corpus/invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    """The `# key: value` lines of a corpus file (error, message, refused-by)."""
    notes = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            notes[key] = value
    return notes
