"""CLI commands of the caches: ``make-data`` writes demo files, ``warm`` loads, ``remove`` takes out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import click
from faust.cli import AppCommand, argument, option

from metrobus_app import app, settings
from metrobus_app.caches.cache import Cache
from metrobus_app.caches.warming import WarmReport, plan_removal, plan_warm, read_changelog, write_changes

from . import redis_source
from .caches import emails, whitelist
from .demo_data import generate
from .files import WHITELISTED, ReadReport, read_emails, read_keys, read_whitelist

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
CACHES = {"emails": emails, "whitelist": whitelist}
Entries = Iterator[tuple[str, str]]


def progressbar(label: str, length: int | None = None):  # type: ignore[no-untyped-def]
    """A progress bar on stderr (shown on a terminal)."""
    return click.progressbar(length=length, label=label, file=click.get_text_stream("stderr"))  # type: ignore[arg-type]


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
    with progressbar("emails", round(accounts * email_share)) as bar:
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
    option("--emails-hash", help="Redis hash: account -> email."),
    option("--emails-keys", help="Redis string keys by pattern, e.g. 'email:*' (account after the last ':')."),
    option("--whitelist-set", help="Redis set of whitelisted emails."),
    option("--redis-url", default=None, help="Redis to read from [default: METROBUS_REDIS_URL]."),
    option("--replace", is_flag=True, help="Also remove the entries the source does not have."),
)
async def warm(
    self: AppCommand,
    emails_file: Path | None,
    whitelist_file: Path | None,
    emails_hash: str | None,
    emails_keys: str | None,
    whitelist_set: str | None,
    redis_url: str | None,
    replace: bool,
) -> None:
    """Load caches from files or Redis; only the difference is written, every worker gets it."""
    redis_url = redis_url or settings.redis_url
    plans: list[tuple[Cache, Callable[[], Entries], str]] = []
    for cache, sources in (
        (emails, {"--emails": emails_file, "--emails-hash": emails_hash, "--emails-keys": emails_keys}),
        (whitelist, {"--whitelist": whitelist_file, "--whitelist-set": whitelist_set}),
    ):
        given = {flag: value for flag, value in sources.items() if value is not None}
        if len(given) > 1:
            raise click.UsageError(f"one source per cache: {' and '.join(given)} both fill {cache.name}")
        if given:
            [(flag, source)] = given.items()
            plans.append((cache, _reader(cache, flag, source, redis_url), str(source)))
    if not plans:
        raise click.UsageError("name a source: --emails/--emails-hash/--emails-keys and/or --whitelist/--whitelist-set")
    for cache, read, source in plans:
        entries = list(read())  # read the whole source first: a failure leaves the cache as it was
        current = await read_changelog(settings, cache.changelog)
        changes, report = plan_warm(cache.name, current, entries, replace=replace)
        await _write(cache, changes, report, f"from {source}")


def _reader(cache: Cache, flag: str, source: object, redis_url: str) -> Callable[[], Entries]:
    """How to read one source; it reports malformed lines of files as it goes."""
    if isinstance(source, Path):
        parse = read_emails if cache is emails else read_whitelist

        def read_file() -> Entries:
            report = ReadReport(source)
            with progressbar(f"reading {source}", _count_lines(source)) as bar:
                yield from parse(source, report, progress=bar.update)
            _say_malformed(report)

        return read_file

    def read_redis() -> Entries:
        client = redis_source.connect(redis_url)
        if flag == "--emails-hash":
            return redis_source.read_hash(client, str(source))
        if flag == "--whitelist-set":
            return redis_source.read_set(client, str(source), WHITELISTED)
        return redis_source.read_keys(client, str(source))

    return read_redis


@app.command(
    argument("cache_name", type=click.Choice(sorted(CACHES))),
    argument("keys", nargs=-1),
    option("--file", "keys_file", type=_existing_file, help="Keys, one a line (text after a ',' is ignored)."),
)
async def remove(self: AppCommand, cache_name: str, keys: tuple[str, ...], keys_file: Path | None) -> None:
    """Remove keys from a cache (e.g. emails taken off the whitelist) on every worker."""
    wanted = list(keys)
    if keys_file is not None:
        wanted.extend(read_keys(keys_file))
    if not wanted:
        raise click.UsageError("name the keys to remove, or --file FILE")
    cache = CACHES[cache_name]
    current = await read_changelog(settings, cache.changelog)
    changes, report = plan_removal(cache.name, current, wanted)
    await _write(cache, changes, report, "")


async def _write(cache: Cache, changes: list, report: WarmReport, source: str) -> None:  # type: ignore[type-arg]
    with progressbar(f"writing {cache.name}", len(changes)) as bar:
        await write_changes(app, cache, changes, progress=bar.update)
    click.echo(f"{report.summary()} {source}".rstrip())


def _say_malformed(report: ReadReport) -> None:
    if report.malformed:
        click.echo(f"{report.path}: {report.malformed} malformed lines skipped, first:", err=True)
        for line in report.first_bad:
            click.echo(f"  {line}", err=True)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
