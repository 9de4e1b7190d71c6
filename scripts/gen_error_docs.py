"""Regenerate docs/errors.md from docs/_src/error_examples.py.

    python scripts/gen_error_docs.py

Every example is written to a temporary directory and checked with
`choreo check`; the page shows what it really prints. tests/test_mustfail.py
fails when the page is out of date.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_src"))

from error_examples import E  # noqa: E402

INTRO = """# Error catalogue

Every static error that `choreo check`, `.check()`, `.project()` and the first
call of a choreography can report, with the smallest example that triggers it,
what `choreo check example.py` prints, and the fix. Errors are positioned
`file:line:col` (column 1-based), followed by the source line, a caret under the
offending code and, when there is an obvious fix, a hint. Checking goes on after
an error, so every problem in a file is reported in one run; `choreo check`
ends with `N errors in FILE` and exits with status 1.

The examples are complete files; `tests/test_mustfail.py` and `tests/test_docs.py`
run each of them and compare the output with this page (regenerate it with
`python scripts/gen_error_docs.py`). The must-fail suite in `tests/mustfail/`
has at least one case for every error.
"""

OUTRO = """
## Not reachable from valid Python

`` `import *` is not allowed in a choreography `` and the front end's
"cannot analyse this block" exist for completeness: Python itself rejects
`import *` inside a function, and a block libcst parsed always parses again.
"""


def main() -> None:
    parts = [INTRO]
    section = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (sec, title, why, code, fix) in enumerate(E):
            d = Path(tmp) / f"c{i}"
            d.mkdir()
            (d / "example.py").write_text(code)
            r = subprocess.run(
                [sys.executable, "-m", "choreo._cli", "check", str(d / "example.py")],
                capture_output=True,
                text=True,
                cwd=d,
            )
            lines = r.stderr.replace(str(d) + "/", "").rstrip("\n").splitlines()
            if lines and lines[-1].endswith("example.py") and " error" in lines[-1]:
                lines = lines[:-1]
            if sec != section:
                parts.append(f"\n## {sec}\n")
                section = sec
            lead = f"{why} " if why else ""
            text = "\n".join(lines)
            parts.append(
                f"\n### {title}\n\n<!-- error example -->\n```python\n{code}```\n\n```text\n{text}\n```\n\n{lead}**Fix:** {fix}\n"
            )
    parts.append(OUTRO)
    (ROOT / "docs" / "errors.md").write_text("".join(parts))
    print(f"wrote docs/errors.md ({len(E)} examples)")


if __name__ == "__main__":
    main()
