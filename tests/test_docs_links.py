"""Every relative Markdown link in README.md, docs/, proofs/ and examples/ resolves.

A link ``[text](path)`` or ``[text](path#anchor)`` must name an existing file or folder of the
repository (relative to the Markdown file), and an ``#anchor`` into a Markdown file must be one
of its headings, slugged the way GitHub slugs them.  Links inside code (fenced blocks, indented
blocks, inline code spans) are not links and are skipped; so are absolute URLs.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def markdown_files() -> list[Path]:
    """README.md and every Markdown file under docs/, proofs/ and examples/."""
    files = [ROOT / "README.md"] if (ROOT / "README.md").exists() else []
    for folder in ("docs", "proofs", "examples"):
        if (ROOT / folder).is_dir():
            files += sorted((ROOT / folder).rglob("*.md"))
    return files


def prose_lines(text: str, keep_spans: bool = False) -> list[str]:
    """The lines of ``text`` outside fenced and indented code blocks (those become blank), inline
    code removed unless ``keep_spans``."""
    out, fence, prev_blank = [], None, True
    for line in text.split("\n"):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is not None:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = None
            out.append("")
            continue
        if marker and len(line) - len(stripped) <= 3:
            fence = marker.group(1)
            out.append("")
            continue
        indented = line.startswith("    ") or line.startswith("\t")
        if indented and prev_blank and out and not _in_list(out):
            out.append("")          # an indented code block (it stays one while indented)
            continue
        prev_blank = not line.strip()
        out.append(line if keep_spans else re.sub(r"(`+)(?:(?!\1).)+?\1", "", line))
    return out


def _in_list(previous: list[str]) -> bool:
    """Whether the last non-blank prose line belongs to a list item (then indentation continues
    the item instead of starting a code block)."""
    for line in reversed(previous):
        if line.strip():
            return bool(re.match(r"\s*([-*+]|\d+[.)])\s", line)) or line.startswith("  ")
    return False


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text: inline markup dropped, lower case, punctuation
    removed (letters, digits, '-', '_' and spaces kept), spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)    # links -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``path`` (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    lines = prose_lines(path.read_text(encoding="utf-8"), keep_spans=True)
    for i, line in enumerate(lines):
        found.update(HTML_ANCHOR.findall(line))
        m = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        text = m.group(2) if m else None
        if text is None and i > 0 and lines[i - 1].strip() and re.match(r"^\s{0,3}(=+|-+)\s*$", line):
            prev = lines[i - 1]
            if not re.match(r"^\s{0,3}(#|[-*+]\s|\d+[.)]\s|>|\|)", prev):
                text = prev.strip()
        if text is None:
            continue
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link in ``path``."""
    out = []
    lines = prose_lines(path.read_text(encoding="utf-8"))
    for no, line in enumerate(lines, start=1):
        targets = [m.group(1) for m in INLINE.finditer(line)]
        # a reference definition cannot interrupt a paragraph
        ref = REFDEF.match(line) if no == 1 or not lines[no - 2].strip() else None
        if ref:
            targets.append(ref.group(1))
        for t in targets:
            t = t[1:-1] if t.startswith("<") else t
            if not SCHEME.match(t):
                out.append((no, t))
    return out


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """One line per relative link that does not resolve (file missing, or anchor missing)."""
    problems = []
    for md in files:
        for no, target in links(md):
            where = f"{md.relative_to(root)}:{no}: {target}"
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / unquote(path_part)).resolve() if path_part else md
            if path_part and (not dest.exists() or root.resolve() not in (dest, *dest.parents)):
                problems.append(where + " (no such file in the repository)")
            elif anchor and dest.suffix == ".md" and dest.is_file() and unquote(anchor) not in anchors(dest):
                problems.append(where + f" (no heading with anchor #{anchor} in {dest.name})")
    return problems


def test_every_relative_link_resolves():
    files = markdown_files()
    assert files, "no Markdown files found"
    problems = broken_links(files)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_proofs_cite_the_theory_reference():
    """Every proof of a statement links to that statement in docs/theory.md, with an anchor that
    exists (checked above), so the citations cannot silently disappear."""
    theory = ROOT / "docs" / "theory.md"
    assert theory.is_file()
    heads = anchors(theory)
    for name in ("lemma-d", "theorem-l1", "theorem-l2", "theorem-l3", "proposition-e", "theorem-m",
                 "theorem-m-condition-1", "theorem-m-condition-2", "theorem-u", "theorem-l4",
                 "theorem-l5", "certified-loss-bound", "where-the-papers-statements-needed-care"):
        assert name in heads, name
    for proof in ("lemma_d", "L1", "L2", "L3", "L4", "L5", "prop_E", "multilayer", "universality",
                  "loss_bound", "soundness_R", "tolerance"):
        targets = [t for _, t in links(ROOT / "proofs" / f"{proof}.md")]
        assert any(t.startswith("../docs/theory.md#") for t in targets), proof


def test_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "t.md").write_text("# Title\n\n## Theorem L1: one `x`\n\n## Theorem L1: one `x`\n"
                                            "Where the paper's statements needed care\n---\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](docs/t.md#theorem-l1-one-x) [dup](docs/t.md#theorem-l1-one-x-1)\n"
                    "[setext](docs/t.md#where-the-papers-statements-needed-care) [self](#top)\n"
                    "[gone](docs/missing.md) [bad anchor](docs/t.md#theorem-l2)\n[0, 1]: not a definition\n"
                    "`[code](docs/nothing.md)` [web](https://example.org/x.md)\n\n"
                    "    [indented code](docs/nothing.md)\n\n<a name=\"top\"></a>\n\n[ref]: docs/t.md#nowhere\n")
    problems = broken_links([page], root=tmp_path)
    assert len(problems) == 3, problems
    assert "docs/missing.md" in problems[0] and "#theorem-l2" in problems[1] and "#nowhere" in problems[2]
