"""The bad-input corpus (``tests/corpus/``): every user mistake gets one clean error.

For each case: the real ``chironsim`` entry point runs in a fresh folder holding the case's
files; it must exit 2, print exactly one ``error:`` message on stderr naming the location and
what was expected, print no traceback, return within the case's time bound (a hang or a
memory blow-up is a failure, not a long wait) and leave every file and folder as it was.
"""

from __future__ import annotations

import importlib
import pkgutil
import resource
import signal
from pathlib import Path

import pytest

import corpus
from corpus.case import Case
from chironsim.cli import main


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in pkgutil.iter_modules(corpus.__path__):
        if info.name.startswith("cases_"):
            cases += importlib.import_module(f"corpus.{info.name}").CASES
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


#: A case that blows memory up must fail as a MemoryError, not take the machine down with it.
MEMORY_HEADROOM = 6 * 2**30


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Timeout()


@pytest.mark.parametrize("case", _all_cases(), ids=str)
def test_bad_input_gets_one_clean_error(case: Case, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for rel, content in case.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            from corpus.case import as_yaml

            path.write_text(content if isinstance(content, str) else as_yaml(content))
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space_bytes() + MEMORY_HEADROOM
    if limits[1] == resource.RLIM_INFINITY or cap < limits[1]:
        resource.setrlimit(resource.RLIMIT_AS, (cap, limits[1]))
    signal.setitimer(signal.ITIMER_REAL, case.timeout_s)
    try:
        code = main(case.argv)
    except _Timeout:
        pytest.fail(f"{case.name}: still running after {case.timeout_s} s (a hang)")
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, limits)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert err.count("error: ") == 1 and err.startswith(("error: ", "usage: ")), err
    for fragment in case.expect:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    after = _snapshot(tmp_path)
    for rel in case.mutates:
        before.pop(rel, None), after.pop(rel, None)
    after = {k: v for k, v in after.items() if "__pycache__" not in k}
    assert after == before, (f"the folder changed: added {sorted(set(after) - set(before))}, "
                             f"removed {sorted(set(before) - set(after))}, changed "
                             f"{sorted(k for k in before if k in after and before[k] != after[k])}")
