from pathlib import Path

from curation_assets.store.sql_files import SQL_DIR


def test_no_template_placeholder_hides_in_a_comment():
    """Placeholders are filled with str.format; one inside a `--` comment would swallow the SQL it inserts."""
    offenders = [
        f"{path.relative_to(SQL_DIR)}:{number}"
        for path in SQL_DIR.rglob("*.sql")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "--" in line and "{" in line.split("--", 1)[1]
    ]
    assert not offenders, offenders


def test_every_sql_file_is_reachable_from_the_package():
    assert (Path(__file__).resolve().parents[2] / "sql").resolve() == SQL_DIR.resolve()
