"""Text from records someone else wrote (run names, settings, error messages, class names) shown on a
terminal or written into Markdown, CSV or LaTeX: :func:`printable` puts it on one line with every
control character made visible, so a newline cannot add lines or rows and an ESC byte cannot reach
the terminal (docs/records.md, "Readers")."""

from __future__ import annotations

import re

# line breaks of any kind (Python's str.splitlines() set): one space each run
_BREAKS = re.compile("[\n\r\t\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
# other C0/C1 controls, DEL and the bidirectional overrides/isolates that reorder what is shown
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` on one line with every control character made visible: line breaks become a space,
    other controls (ESC, BEL, DEL, C1, bidi overrides) their escape (``\\x1b``, ``\\u202e``)."""
    text = _BREAKS.sub(" ", str(text))
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def rich_text(text: object):
    """``text`` as a ``rich.text.Text`` (never parsed as rich markup), made :func:`printable`."""
    from rich.text import Text

    return Text(printable(text))
