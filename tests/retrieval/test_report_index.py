"""`finegrain report --index`: the worst mistakes' nearest images come from a similar-image index."""
from __future__ import annotations

import re

from conftest import COLOURS, make_image, make_split_folder, run_cli


def test_report_shows_nearest_images_from_the_index(tmp_path, capsys):
    root = make_split_folder(tmp_path / "birds")
    make_image(root / "test" / "blue_jay" / "odd.png", COLOURS["red_finch"], 999)  # a confident mistake
    model, index, out = tmp_path / "m", tmp_path / "idx", tmp_path / "report.html"
    assert run_cli(capsys, "fit", root, "-o", model, "--backbone", "tiny", "-q")[0] == 0
    assert run_cli(capsys, "index", root, "-o", index, "--backbone", "tiny", "--split", "train", "-q")[0] == 0
    code, _, err = run_cli(capsys, "report", model, root, "-o", out, "--index", index, "--mistakes", "3",
                           "--neighbours", "2", "-q")
    assert code == 0, err
    page = out.read_text()
    assert '<section id="index">' in page and "Nearest images in the index" in page
    section = page.split('<section id="index">')[1].split("</section>")[0]
    assert "odd.png" in section and "red_finch" in section
    assert len(re.findall(r'class="thumb"', section)) >= 2
