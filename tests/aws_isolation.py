"""Keep boto3 away from the developer's own AWS setup in tests and benchmarks.

Every S3 test talks to moto (in-process or a loopback server): no profile, token, endpoint or
instance metadata of the machine may leak in, and credentials are fake but present.
"""

from __future__ import annotations

from pathlib import Path

#: Variables that would point boto3 at real credentials or another endpoint.
AWS_UNSET = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def fake_aws_env(tmp: Path, region: str = "us-east-1") -> dict[str, str]:
    """Environment variables for an isolated fake AWS setup (writes an empty config in ``tmp``)."""
    empty = Path(tmp) / "empty-aws-file"
    empty.write_text("")
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
    }


def isolated_environ(environ: dict[str, str], tmp: Path, region: str = "us-east-1") -> dict:
    """``environ`` without the real AWS variables, plus the fake ones (for child processes)."""
    clean = {k: v for k, v in environ.items() if k not in AWS_UNSET}
    clean.update(fake_aws_env(tmp, region))
    return clean


def isolate_aws(monkeypatch, tmp: Path, region: str = "us-east-1") -> None:
    """The same for this process, undone by pytest's ``monkeypatch`` after the test."""
    for var in AWS_UNSET:
        monkeypatch.delenv(var, raising=False)
    for name, value in fake_aws_env(tmp, region).items():
        monkeypatch.setenv(name, value)
