"""`mlspec rehearse` refuses to start, with exit code 2 and the fix, before any container runs: a stand-in that
is not on this machine, a missing stand-in the environment needs, an environment that is not a GitOps cluster.
(The rehearsal itself runs in tests/integration/test_images.py, which needs Docker.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, copy_platform

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--azure", AZURITE.replace("127.0.0.1:10000", "uaebankmlprod.blob.core.windows.net"), "--azure points at"),
        ("--azure", "AccountName=uaebankmlprod;AccountKey=a2V5;", "has no BlobEndpoint"),
        ("--redis", "redis.prod.internal:6379", "--redis points at redis.prod.internal"),
        ("--postgres", "postgresql://u:p@dwh.bank.internal/x", "--postgres points at dwh.bank.internal"),
    ],
)
def test_a_stand_in_that_could_be_a_real_store_is_refused(
    tmp_path: Path, cli: Callable[..., CliResult], option: str, value: str, says: str
) -> None:
    copy_platform(tmp_path)
    result = cli("rehearse", "--env", "prod", option, value, "-C", str(tmp_path))
    assert result.code == 2, result.out + result.err
    output = result.out + result.err
    assert says in output and "Traceback" not in output
    assert not (tmp_path / ".mlspec" / "rehearsal" / "prod").exists(), "nothing was written"


def test_a_missing_stand_in_names_the_option_that_provides_it(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    copy_platform(tmp_path)
    result = cli("rehearse", "--env", "prod", "--azure", AZURITE, "-C", str(tmp_path))
    assert result.code == 2
    output = result.out + result.err
    assert "needs a stand-in for Feast's Redis online store" in output and "--redis" in output


def test_only_gitops_clusters_are_rehearsed(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    copy_platform(tmp_path)
    result = cli("rehearse", "--env", "local", "-C", str(tmp_path))
    assert result.code == 2
    assert "not a GitOps cluster with Kubeflow pipelines" in result.out + result.err
