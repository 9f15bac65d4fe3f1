"""Copy a compare report into docs/ with the figures chosen for it: every committed page's links must resolve.

    python benchmarks/publish_report.py runs/confirm/sfd-28-cpu docs/confirmation-sfd28-report.md \
        --prefix confirm-sfd28- --figures fid_vs_nfe.png,rmse_vs_progress.png

A chosen figure is copied beside the page as PREFIX + its name and the image points there; any other figure of the
report becomes the line "(figure `NAME`: in the run folder, not committed)", so the page never names a missing file.
--note puts a quoted line under the title, e.g. that the report's own Holm column is over its comparisons only and
the verdict against a larger pre-registered family lives elsewhere.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def publish(run: Path, page: Path, prefix: str, figures: set[str], note: str = "") -> list[str]:
    """Write `page` from run/report.md (with `note` quoted under its title); return the figure files copied."""
    src = run / "report.md"
    if not src.is_file():
        raise SystemExit(f"error: {src} is missing; run bdense compare --report-only --out {run} first")
    missing = sorted(f for f in figures if not (run / f).is_file())
    if missing:
        raise SystemExit(f"error: {run} has no figure {', '.join(missing)}; choose among "
                         f"{', '.join(sorted(p.name for p in run.glob('*.png')))}")
    copied = []

    def link(m: re.Match) -> str:
        name = m.group(2)
        if name not in figures:
            return f"(figure `{name}`: in the run folder, not committed)"
        shutil.copyfile(run / name, page.parent / (prefix + name))
        copied.append(prefix + name)
        return f"![{m.group(1)}]({prefix + name})"

    text = IMAGE.sub(link, src.read_text())
    if note:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n> {note}\n{rest}"
    page.write_text(text)
    return copied


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a compare output folder holding report.md")
    ap.add_argument("page", type=Path, help="the docs page to write, e.g. docs/confirmation-sfd28-report.md")
    ap.add_argument("--prefix", required=True, help="prepended to each copied figure's name")
    ap.add_argument("--figures", default="", help="comma-separated figure names of the report to commit")
    ap.add_argument("--note", default="", help="a line quoted under the page's title")
    a = ap.parse_args(argv)
    copied = publish(a.run, a.page, a.prefix, {f for f in a.figures.split(",") if f}, a.note)
    print(f"wrote {a.page}" + (f" and {', '.join(copied)}" if copied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
