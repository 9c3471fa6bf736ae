"""CLI commands of the caches: ``make-data`` writes demo files, ``warm`` loads them."""

from __future__ import annotations

from pathlib import Path

import click
from faust.cli import AppCommand, option

from metrobus_app import app
from metrobus_app.cache import Cache

from .caches import emails, whitelist
from .demo_data import generate
from .files import ReadReport, read_emails, read_whitelist

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@app.command(
    option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("data"),
        show_default=True,
        help="Directory for emails.dat and whitelist.dat.",
    ),
    option(
        "--accounts",
        type=click.IntRange(1, 1_000_000),
        default=100_000,
        show_default=True,
        help="Accounts 1000000.. (1000000 gives the seed's whole range).",
    ),
    option(
        "--email-share",
        type=click.FloatRange(0, 1),
        default=0.8,
        show_default=True,
        help="Share of accounts that have an email.",
    ),
    option(
        "--whitelist-share",
        type=click.FloatRange(0, 1),
        default=0.5,
        show_default=True,
        help="Share of those emails that are whitelisted.",
    ),
    option("--seed", type=int, default=42, show_default=True, help="Same seed, same files."),
)
async def make_data(
    self: AppCommand, out: Path, accounts: int, email_share: float, whitelist_share: float, seed: int
) -> None:
    """Generate the demo's cache files (deterministic for a seed)."""
    total = round(accounts * email_share)
    with click.progressbar(length=total, label="emails", file=click.get_text_stream("stderr")) as bar:
        data = generate(
            out,
            accounts=accounts,
            email_share=email_share,
            whitelist_share=whitelist_share,
            seed=seed,
            progress=bar.update,
        )
    click.echo(f"wrote {data.emails} emails to {data.emails_path}, {data.whitelisted} of them to {data.whitelist_path}")


@app.command(
    option("--emails", "emails_file", type=_existing_file, help="emails.dat: 'account,email' per line."),
    option("--whitelist", "whitelist_file", type=_existing_file, help="whitelist.dat: one email per line."),
)
async def warm(self: AppCommand, emails_file: Path | None, whitelist_file: Path | None) -> None:
    """Load cache files into the caches every worker holds."""
    if emails_file is None and whitelist_file is None:
        raise click.UsageError("name at least one file: --emails PATH and/or --whitelist PATH")
    for cache, path, reader in ((emails, emails_file, read_emails), (whitelist, whitelist_file, read_whitelist)):
        if path is not None:
            await _warm(cache, path, reader)


async def _warm(cache: Cache, path: Path, reader) -> None:  # type: ignore[no-untyped-def]
    report = ReadReport(path)
    with click.progressbar(
        length=_count_lines(path), label=f"warming {cache.name}", file=click.get_text_stream("stderr")
    ) as bar:
        sent = await cache.load(reader(path, report), progress=bar.update)
    click.echo(f"{cache.name}: {sent} entries written from {path}, {report.malformed} malformed lines skipped")
    for line in report.first_bad:
        click.echo(f"  {line}", err=True)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
