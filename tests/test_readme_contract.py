"""The README's two commands are the contract: CI runs exactly command 2, and command 2 is all a fresh machine needs
(tests/browser.sh installs the browser of the HTML tests where it can, and says why where it cannot)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from conftest import ROOT


def readme_commands() -> list[str]:
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    quickstart, tests = readme_commands()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [tests] and "python -m pytest -q" in tests and "bash tests/browser.sh" in tests
    assert quickstart.endswith("&& finetune")


def test_browser_script_without_apt_says_why_and_lets_the_tests_run(tmp_path):
    """A machine without Chromium and without apt-get: one note naming the reason, exit 0 (the other tests run and
    tests/test_html.py skips with its reason)."""
    for tool in ("id", "bash"):
        os.symlink(shutil.which(tool), tmp_path / tool)
    r = subprocess.run([str(tmp_path / "bash"), str(ROOT / "tests" / "browser.sh")], capture_output=True, text=True,
                       env={"PATH": str(tmp_path)}, timeout=60)
    assert r.returncode == 0
    assert r.stderr.strip() == ("note: Chromium and chromedriver are not installed (apt-get is not available on this "
                                "machine): tests/test_html.py will be skipped")
