"""Readers of the seed's cache files: ``emails.dat`` (account,email) and ``whitelist.dat`` (email)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

Pair = tuple[str, str]

# A whitelist entry's value. "1", not True: a GlobalTable of bools never finished loading (DESIGN.md).
WHITELISTED = "1"


@dataclass
class ReadReport:
    """What a read found: good lines, and the malformed ones by line number."""

    path: Path
    read: int = 0
    malformed: int = 0
    first_bad: list[str] = field(default_factory=list)

    def bad(self, number: int, line: str, why: str) -> None:
        self.malformed += 1
        if len(self.first_bad) < 5:
            self.first_bad.append(f"{self.path}:{number}: {why}: {line[:80]!r}")


Progress = Callable[[int], None]


def read_emails(path: Path, report: ReadReport, progress: Progress | None = None) -> Iterator[Pair]:
    """Yield (account, email) from lines ``1234567,someone@example.com``."""

    def parse(line: str) -> Pair | str:
        account, sep, email = line.partition(",")
        account, email = account.strip(), email.strip()
        if not sep or not account.isdigit():
            return "expected 'account,email' with a numeric account"
        if "@" not in email:
            return "not an email address"
        return account, email

    return _read(path, report, parse, progress)


def read_whitelist(path: Path, report: ReadReport, progress: Progress | None = None) -> Iterator[Pair]:
    """Yield (email, "1") from lines holding one email each."""

    def parse(line: str) -> Pair | str:
        email = line.strip()
        if "@" not in email or "," in email or " " in email:
            return "not an email address"
        return email, WHITELISTED

    return _read(path, report, parse, progress)


def read_keys(path: Path) -> Iterator[str]:
    """Keys to remove, one a line; anything after a ',' is ignored, so either .dat format works."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            key = line.split(",", 1)[0].strip()
            if key:
                yield key


def _read(
    path: Path, report: ReadReport, parse: Callable[[str], Pair | str], progress: Progress | None
) -> Iterator[Pair]:
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if progress is not None and number % 10_000 == 0:
                progress(10_000)
            if not line.strip():
                continue
            parsed = parse(line)
            if isinstance(parsed, str):
                report.bad(number, line.rstrip("\n"), parsed)
                continue
            report.read += 1
            yield parsed
