"""Microsoft's SARIF multitool (npm @microsoft/sarif-multitool), installed once into .cache/ and run as a validator.

The npm package ships the self-contained .NET tool in a per-platform package
(@microsoft/sarif-multitool-linux, -darwin, -win32). We call that binary directly: the package's
bin.js runs it through a shell, which would split the ';' of a rule-kind list. The tool runs in
.NET's invariant globalization mode, so libicu need not be installed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

VERSION = "5.7.0"
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "sarif-multitool"  # gitignored
# 5.7.0 rejects a single --rule-kind value ("Option 'rule-kind' is defined with a bad format"); a
# ';' list parses. Gh is GitHub code scanning's rules; Sarif adds the specification's own.
RULE_KINDS = "Gh;Sarif"


def _binary() -> Path:
    suffix = ".exe" if sys.platform == "win32" else ""
    return CACHE / "node_modules" / "@microsoft" / f"sarif-multitool-{sys.platform}" / f"Sarif.Multitool{suffix}"


def install() -> Path:
    """The multitool's binary, installed with npm on first use. Fails (never skips) when npm cannot install it."""
    binary = _binary()
    if binary.is_file():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not on PATH: cannot install @microsoft/sarif-multitool to validate SARIF")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".install.lock").open("w") as lock:  # parallel test workers install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.is_file():
            done = subprocess.run(
                [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--loglevel=error",
                 f"@microsoft/sarif-multitool@{VERSION}"],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            if done.returncode != 0 or not binary.is_file():
                pytest.fail(f"npm could not install @microsoft/sarif-multitool@{VERSION}:\n{done.stdout}{done.stderr}")
    # npm may refuse the package's postinstall script (the chmod); do what it would have done
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def validate(binary: Path, sarif: Path) -> list[str]:
    """The validator's errors and warnings about ``sarif`` (notes are suggestions), one line each."""
    report = sarif.with_name(sarif.name + ".validation.sarif")
    done = subprocess.run(
        [str(binary), "validate", "--rule-kind", RULE_KINDS, "--log", "ForceOverwrite", "-o", str(report), str(sarif)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT": "1"},
    )
    assert done.returncode == 0 and report.is_file(), f"the multitool failed:\n{done.stdout}{done.stderr}"
    log = json.loads(report.read_text(encoding="utf-8-sig"))
    problems = []
    for run in log["runs"]:
        for result in run.get("results", []):
            message = result["message"]
            problems.append(
                f"{result['ruleId']} {result.get('level', 'warning')}: {message.get('id', '')} "
                f"{message.get('arguments', message.get('text', ''))}"
            )
    return problems
