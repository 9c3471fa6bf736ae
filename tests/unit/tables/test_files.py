"""Reading the seed's cache files, and generating them."""

from tables.demo_data import FIRST_ACCOUNT, generate
from tables.files import WHITELISTED, ReadReport, read_emails, read_whitelist


def test_read_emails_skips_and_names_malformed_lines(tmp_path):
    path = tmp_path / "emails.dat"
    path.write_text("1000001,ann@example.com\n\nnot a line\n1000002, bob@example.com \nabc,x@y.z\n1000003,nomail\n")
    report = ReadReport(path)
    assert list(read_emails(path, report)) == [("1000001", "ann@example.com"), ("1000002", "bob@example.com")]
    assert (report.read, report.malformed) == (2, 3)
    assert report.first_bad[0].startswith(f"{path}:3: expected 'account,email'")
    assert f"{path}:6: not an email address" in report.first_bad[2]


def test_read_whitelist(tmp_path):
    path = tmp_path / "whitelist.dat"
    path.write_text("ann@example.com\nbroken line\n")
    report = ReadReport(path)
    assert list(read_whitelist(path, report)) == [("ann@example.com", WHITELISTED)]
    assert report.malformed == 1


def test_generate_writes_exact_shares_deterministically(tmp_path):
    first = generate(tmp_path / "a", accounts=1000, email_share=0.8, whitelist_share=0.25, seed=7)
    again = generate(tmp_path / "b", accounts=1000, email_share=0.8, whitelist_share=0.25, seed=7)
    assert (first.emails, first.whitelisted) == (800, 200)
    assert first.emails_path.read_text() == again.emails_path.read_text()
    assert first.whitelist_path.read_text() == again.whitelist_path.read_text()
    report = ReadReport(first.emails_path)
    pairs = dict(read_emails(first.emails_path, report))
    assert report.malformed == 0
    assert all(FIRST_ACCOUNT <= int(account) < FIRST_ACCOUNT + 1000 for account in pairs)
    assert len(set(pairs.values())) == 800
    whitelisted = [email for email, _ in read_whitelist(first.whitelist_path, ReadReport(first.whitelist_path))]
    assert set(whitelisted) <= set(pairs.values())
