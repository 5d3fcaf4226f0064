"""BENCHMARKS.md is written by several scripts, each owning one section that
starts at its `<!-- name -->` marker and runs to the next marker (or the end)."""

import os


def replace_section(path, marker, lines):
    """Puts `lines` (which start with `marker`) in place of `marker`'s
    section, or at the end; every other section stays as it was."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    body = "\n".join(lines).rstrip() + "\n"
    if marker in text:
        head, rest = text.split(marker, 1)
        following = rest.find("\n<!-- ")
        tail = rest[following + 1:] if following >= 0 else ""
        text = head + body + ("\n" + tail if tail else "")
    else:
        text = text.rstrip() + "\n\n" + body
    with open(path, "w") as f:
        f.write(text)
