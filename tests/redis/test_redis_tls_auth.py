"""TLS and passwords from the URL, against a real ``redis-server`` listening
only on a TLS port with a password (certificates made with ``openssl``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from redisfix import free_port, missing, need_modules

PASSWORD = "s3cret-pw"


def make_certs(folder: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH (needed to make test certificates)")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    # the extensions Python 3.13's strict verification (VERIFY_X509_STRICT) requires
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=pipekit test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    need_modules("redis", "pipekit_redis")
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not on PATH (install Redis to run these tests)")
    folder = tmp_path / "tls"
    folder.mkdir()
    make_certs(folder)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        import redis

        client = redis.Redis(
            host="localhost",
            port=port,
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(folder / "ca.pem"),
            socket_timeout=1,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    pytest.skip("this redis-server was built without TLS")
                assert time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield port, folder / "ca.pem"
    finally:
        proc.kill()
        proc.wait()


def pipeline(project: Project) -> None:
    project.write("in.txt", "a\n")
    project.pipeline(
        [{"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}],
        backend={"name": "redis", "options": {"retries": 1}},
    )


def test_tls_with_password_in_the_url(project: Project, tls_server) -> None:
    port, ca = tls_server
    pipeline(project)
    url = f"rediss://:{PASSWORD}@localhost:{port}/0?ssl_ca_certs={ca}"
    env = project.env(PIPEKIT_REDIS_URL=url)
    summary = project.run_json(env=env)
    assert summary["stages"][0]["status"] == "ok"
    doctor = project.cli("doctor", env=env)
    assert doctor.returncode == 0, doctor.stderr
    assert f"rediss://:***@localhost:{port}/0" in doctor.stdout
    assert PASSWORD not in doctor.stdout + doctor.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("rediss://:wrong@localhost:{port}/0?ssl_ca_certs={ca}", "refused the credentials"),
        ("rediss://localhost:{port}/0?ssl_ca_certs={ca}", "needs a password"),
        ("redis://:" + PASSWORD + "@localhost:{port}/0", "unreachable"),  # no TLS
        ("rediss://:" + PASSWORD + "@localhost:{port}/0", "ssl_ca_certs="),  # unknown CA
    ],
    ids=["wrong-password", "no-password", "plain-to-tls", "unverified-certificate"],
)
def test_refused_connections_are_exit_2_without_the_password(
    project: Project, tls_server, url: str, says: str
) -> None:
    port, ca = tls_server
    pipeline(project)
    proc = project.cli("run", env=project.env(PIPEKIT_REDIS_URL=url.format(port=port, ca=ca)))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert PASSWORD not in proc.stderr and ":wrong@" not in proc.stderr
