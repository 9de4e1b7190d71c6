"""Coverage-guided fuzzing of the payload codec and the wire's Batch parsing (not in CI).

Needs ``atheris`` (``pip install atheris``). Every input is decoded as a
payload (``choreo._codec.decode``): it must return a value or raise
``CodecError``, nothing else. Run::

    .venv/bin/python bench/fuzz_codec_atheris.py -max_total_time=60

(any libFuzzer flag works; a crash is saved as ``crash-<sha1>`` and reported
with its traceback).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from choreo._codec import decode
    from choreo._errors import CodecError


def one_input(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
