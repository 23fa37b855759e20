"""The Data Docs validation page says, with no CDN: which run (named after the data), which asset,
and pass/fail per expectation and overall; Great Expectations' INFO chatter stays out of the console."""
from __future__ import annotations

import logging
import re

from genloop.stages.clean import clean
from genloop.config import CleanConfig
from genloop.paths import ProjectPaths
from genloop.io.validation import DATA_ASSET

from test_data_docs import validation_pages, write_random


def test_validation_page_names_run_and_asset_and_shows_status_without_icons(tmp_path, caplog):
    paths = ProjectPaths.at(tmp_path)
    write_random(paths, bad_labels=2)
    with caplog.at_level(logging.INFO):
        result = clean(CleanConfig(), paths)

    (page,) = validation_pages(result.data_docs.parent)
    text = page.read_text()
    run_name = re.search(r"Run Name</div></td><td[^>]*><div[^>]*>([^<]+)<", text).group(1)
    assert run_name.startswith("genloop-clean-") and run_name in page.as_posix()
    assert f"Data asset: {DATA_ASSET.replace('+', '&#43;')}" in text or f"Data asset: {DATA_ASSET}" in text
    assert "__none__" not in text and "Data asset: None" not in text
    assert 'class="fas fa-' not in text  # no blank icon left
    assert text.count('data-status="failed"') == 2  # the label expectation and the page header
    assert 'data-status="passed"' in text and "FAILED</span>" in text
    assert 'data-status="failed"' in result.data_docs.read_text()  # the index's link says it too
    assert not [r for r in caplog.records if "Created temporary directory" in r.getMessage()]
