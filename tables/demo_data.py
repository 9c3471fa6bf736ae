"""Deterministic demo data in the seed's formats: who has an email, and who is whitelisted."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faker import Faker

FIRST_ACCOUNT = 1_000_000
LAST_ACCOUNT = 1_999_999


@dataclass(frozen=True)
class DemoData:
    """Where the files went and how many lines each got."""

    emails_path: Path
    whitelist_path: Path
    emails: int
    whitelisted: int


def account_range(accounts: int) -> range:
    """The account numbers of a demo of ``accounts`` accounts, within the seed's range."""
    if not 1 <= accounts <= LAST_ACCOUNT - FIRST_ACCOUNT + 1:
        raise ValueError(f"accounts must be between 1 and {LAST_ACCOUNT - FIRST_ACCOUNT + 1}, got {accounts}")
    return range(FIRST_ACCOUNT, FIRST_ACCOUNT + accounts)


def generate(
    out_dir: Path,
    *,
    accounts: int,
    email_share: float,
    whitelist_share: float,
    seed: int,
    progress: Callable[[int], None] = lambda n: None,
) -> DemoData:
    """Write ``emails.dat`` and ``whitelist.dat``: exact shares of accounts with an email, of emails whitelisted."""
    rng = random.Random(seed)
    fake = Faker()
    fake.seed_instance(seed)
    numbers = account_range(accounts)
    with_email = sorted(rng.sample(numbers, round(accounts * email_share)))
    out_dir.mkdir(parents=True, exist_ok=True)
    emails_path, whitelist_path = out_dir / "emails.dat", out_dir / "whitelist.dat"
    addresses = []
    with open(emails_path, "w") as out:
        for i, account in enumerate(with_email, 1):
            # The account number keeps every address unique; Faker makes it look real.
            address = f"{fake.user_name()}.{account}@{fake.free_email_domain()}"
            addresses.append(address)
            out.write(f"{account},{address}\n")
            if i % 10_000 == 0:
                progress(10_000)
    progress(len(with_email) % 10_000)
    whitelisted = rng.sample(addresses, round(len(addresses) * whitelist_share))
    whitelist_path.write_text("".join(f"{address}\n" for address in whitelisted))
    return DemoData(emails_path, whitelist_path, len(addresses), len(whitelisted))
