"""The bank page's "Changes" block: one per update session, with its counts, sizes and file names."""

from __future__ import annotations

import re
from pathlib import Path

from tests.ui.conftest import Site


async def test_bank_page_shows_each_update_s_changes(updated: Site):
    tree = Path(updated.node.config.root) / "example-remote"
    (tree / "release.txt").write_text("Release 2\n")
    (tree / "example3.fasta").write_text(">seq3\nTTTT\n")
    owner = await updated.browser("owner")
    response = await owner.api("POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    assert (await updated.job_done((await response.json())["id"]))["state"] == "done"

    text = await (await updated.browser()).page("/ui/banks/example")  # anyone may see a public bank
    section = text[text.index('<section aria-labelledby="changes-h" id="changes">'):]
    section = section[:section.index("</section>")]
    blocks = re.findall(r'<details class="change-block" data-session="([^"]+)">(.*?)</details>', section, re.S)
    assert len(blocks) == 2  # newest first
    newest = blocks[0][1]
    assert "<strong>2</strong>" in newest and "against 1" in newest
    size = (tree / "example3.fasta").stat().st_size
    assert f'<span class="change added" data-kind="added">1 added ({size} B)</span>' in newest
    assert '<span class="change removed" data-kind="removed">0 removed (0 B)</span>' in newest
    assert re.search(r'<span class="badge">added</span> example3\.fasta', newest)
    assert re.search(r'<span class="badge">changed</span> release\.txt', newest)
    assert "against nothing (first release)" in blocks[1][1]
