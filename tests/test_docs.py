"""The README and docs/ pages: every relative link and image resolves, every page is linked from the README, and the
README stays a short front door."""

import re

import pytest
from helpers import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").rglob("*.md"))
MAX_README_LINES = 250
# [text](target) and ![alt](target), the target up to whitespace or ")"; code spans and fenced blocks are removed first
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_targets(markdown: str) -> list[str]:
    """The relative link and image targets of a markdown text, without their #fragment (links inside code are text)."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor in the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_targets_finds_links_and_images_but_not_code():
    text = "[a](docs/a.md#x) ![b](b.png) [c](https://x.org) [d](#here) `[e](e.md)`\n```\n[f](f.md)\n```\n"
    assert relative_targets(text) == ["docs/a.md", "b.png"]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_image_exists(page):
    missing = [t for t in relative_targets(page.read_text(encoding="utf-8")) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_readme_is_short_and_links_every_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    linked = {(README.parent / t).resolve() for t in relative_targets(text)}
    top_pages = sorted((REPO / "docs").glob("*.md"))
    assert top_pages, "docs/ has no pages"
    unlinked = [p.name for p in top_pages if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"
