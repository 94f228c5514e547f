"""The data funnel as Markdown: per source, how many rows came in, how many each filter removed, how
many were quarantined (per reason), how many were kept and how many tokens they became.

Rendered from the contract manifest (`pharia.data.contract`: data/manifest.json) and nothing else,
so the Prefect artifact, a report and the manifest can never disagree. A pure function: no I/O, no
Prefect, unit-tested on hand-written manifests.

Each table walks the funnel: rows in, then each filter, then each quarantine reason, then kept; the
`left` column is what remains after the row, so a reader sees where the rows went. When the counts
do not add up (rows_in != kept + filtered + quarantined) the table says so in a row of its own
instead of hiding the gap. Memorisation canaries planted into the train split after the funnel
(pharia.data.canaries) get a line of their own: they are documents of the shards but no source's rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _int(value: Any) -> int:
    return int(value or 0)


def _fmt(n: int) -> str:
    return f"{n:,}"


def data_docs_uri(path: str | None) -> str | None:
    """file:// URI of the Data Docs index page (what a browser opens); None when there is none."""
    if not path:
        return None
    return Path(path).absolute().as_uri()


def funnel_rows(account: Mapping[str, Any]) -> list[tuple[str, int | None, int]]:
    """(step, rows removed or None, rows left) for one source's (or the totals') accounting."""
    rows_in = _int(account.get("rows_in"))
    rows: list[tuple[str, int | None, int]] = [("in", None, rows_in)]
    left = rows_in
    for name, count in (account.get("filtered") or {}).items():
        left -= _int(count)
        rows.append((f"filtered: {name}", _int(count), left))
    for reason, count in (account.get("quarantined") or {}).items():
        left -= _int(count)
        rows.append((f"quarantined: {reason}", _int(count), left))
    kept = _int(account.get("kept"))
    if left != kept:
        rows.append(("unaccounted (counts do not add up)", left - kept, kept))
    rows.append(("kept", None, kept))
    return rows


def _table(account: Mapping[str, Any]) -> list[str]:
    lines = ["| step | removed | left |", "|---|---:|---:|"]
    for step, removed, left in funnel_rows(account):
        shown = "" if removed is None else _fmt(removed)
        name = f"**{step}**" if step in ("in", "kept") else step
        lines.append(f"| {name} | {shown} | {_fmt(left)} |")
    lines.append(f"| tokens | | {_fmt(_int(account.get('tokens')))} |")
    return lines


def _sum(mapping: Mapping[str, Any] | None) -> int:
    return sum(_int(v) for v in (mapping or {}).values())


def canary_line(section: Mapping[str, Any] | None) -> str | None:
    """One line accounting for the planted canary documents; None for a manifest without the section."""
    if section is None:
        return None
    planted = _int(section.get("planted_documents"))
    if not planted:
        return "Canaries: none planted (data.canaries.count is 0)."
    repeats = ", ".join(str(r) for r in section.get("repeats") or [])
    return (
        f"Canaries: {_fmt(planted)} planted documents ({_fmt(_int(section.get('count')))} canaries, repeats "
        f"{repeats}), {_fmt(_int(section.get('tokens')))} tokens, train split only, "
        f"not counted in the sources' rows or totals ({section.get('file')})."
    )


def render_funnel(manifest: Mapping[str, Any], title: str = "Data funnel") -> str:
    """Markdown: validation verdict with a link to the Data Docs, a one-line-per-source overview,
    the planted canaries' line, then the funnel table of every source and of the totals."""
    validation = manifest.get("validation") or {}
    uri = data_docs_uri(validation.get("data_docs"))
    verdict = "passed" if validation.get("success") else "FAILED"
    checks = f"{validation.get('successful', '?')}/{validation.get('evaluated', '?')} expectations"
    docs = f"[Great Expectations Data Docs]({uri})" if uri else "no Data Docs recorded"
    lines = [f"# {title}", "", f"Validation {verdict} ({checks}): {docs}", ""]

    sources: Mapping[str, Any] = manifest.get("sources") or {}
    totals: Mapping[str, Any] = manifest.get("totals") or {}
    lines += ["| source | domain | in | filtered | quarantined | kept | tokens |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, account in [*sources.items(), ("**total**", totals)]:
        lines.append(
            f"| {name} | {account.get('domain', '')} | {_fmt(_int(account.get('rows_in')))} "
            f"| {_fmt(_sum(account.get('filtered')))} | {_fmt(_sum(account.get('quarantined')))} "
            f"| {_fmt(_int(account.get('kept')))} | {_fmt(_int(account.get('tokens')))} |"
        )
    canaries = canary_line(manifest.get("canaries"))
    if canaries is not None:
        lines += ["", canaries]
    for name, account in sources.items():
        domain = account.get("domain")
        lines += ["", f"## {name}" + (f" ({domain})" if domain else ""), "", *_table(account)]
    lines += ["", "## total", "", *_table(totals)]
    return "\n".join(lines) + "\n"
